"""Lightning and Hydra callbacks: atomic, weights-only checkpoints that are never written with NaN
weights; resumable best checkpoints that trust no stored path; random generator state for exact
resumes; the sweep summary (divergence detection: :mod:`recsys_cli.training.divergence`)."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.experimental.callback import Callback as HydraCallback
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from recsys_cli.analysis.plots import draw_quietly, draw_sweep
from recsys_cli.analysis.sweeps import format_groups, seed_groups, sweep_rows, write_rows_csv
from recsys_cli.errors import ConfigError
from recsys_cli.io import atomic_write, load_checkpoint, write_text_atomic
from recsys_cli.training.divergence import Diverged, nan_weights
from recsys_cli.training.metrics import METRIC_NAMES

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints to a temporary file and renames it: an interrupted save never leaves a
    truncated ``best.ckpt`` / ``last.ckpt`` behind. Reads them weights-only, always.

    Every checkpoint Lightning reads (``fit(ckpt_path=...)``, ``validate`` / ``test`` of the best
    checkpoint) goes through :meth:`load_checkpoint`, which passes ``weights_only=True`` whatever
    the caller asked: tensors and plain containers only, never code. The explicit value also holds
    under ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which only changes loads that leave it unset.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        # the last line of defence of "the last finite checkpoint is kept" (DivergenceGuard stops
        # a run before this in every case it knows): NaN weights never replace a checkpoint
        bad = nan_weights(checkpoint.get("state_dict") or {})
        if bad:
            raise Diverged(
                f"training diverged: the weights to save in {Path(path).name} have NaN values ({', '.join(bad[:3])})",
                {"step": checkpoint.get("global_step"), "epoch": checkpoint.get("epoch"), "what": "NaN weights"},
            )
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location or "cpu", weights_only=True)


class RunCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint that resumes correctly into a new run directory, trusting no path it reads.

    ``recsys train ... ckpt_path=OLD/checkpoints/last.ckpt`` writes to a new run directory. Lightning
    then forgets the interrupted run's best score, so the first epoch after resuming would become
    "best" even if an earlier epoch was better. Here the interrupted run's best checkpoint is
    copied into the new directory with its score, so the final test uses the best epoch of the
    whole run. Without ``monitor`` (the ``last.ckpt`` writer) there is nothing to carry over.

    The paths in the checkpoint's callback state are data, not instructions: the best checkpoint it
    names is carried over only if it is a file in the same folder as the checkpoint given by
    ``ckpt_path`` (symbolic links resolved) and a recsys checkpoint (read weights-only) of the same
    model; otherwise it is ignored with one warning line and the best epoch is chosen among the
    epochs trained from here on. No other stored path (``dirpath``, ``best_k_models``,
    ``last_model_path``) is ever used, so nothing outside the run is read, copied or deleted.
    Loading a checkpoint to evaluate it (``validate`` / ``test`` of the best) carries nothing.
    """

    _loading: tuple[bool, str | None, dict] | None = None

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # called by Lightning just before load_state_dict, for the file it is reading
        info = checkpoint.get("recsys")
        self._loading = (trainer.state.fn == TrainerFn.FITTING, trainer.ckpt_path, info if isinstance(info, dict) else {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        fitting, source, info = self._loading or (False, None, {})
        self._loading = None
        if not fitting or not self.monitor or source is None or self.dirpath is None:
            return
        old_best, score = state_dict.get("best_model_path"), state_dict.get("best_model_score")
        if not old_best or score is None:
            return
        try:
            score = torch.as_tensor(float(score))
            best = self._carry_over(Path(str(old_best)), Path(source), info)
        except (TypeError, ValueError, OSError, ConfigError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            reason = reason.split(": ", 1)[1].split("; give ")[0] if reason.startswith("best_model_path=") else reason
            log.warning(
                "ckpt_path=%s: ignored the best checkpoint it names (%s): %s; the best epoch is chosen among "
                "the epochs trained from here on", source, old_best, reason,
            )
            return
        self.best_model_path = self.kth_best_model_path = best
        self.best_model_score = self.kth_value = score
        self.best_k_models = {best: score}
        log.info("Resumed: carried the best checkpoint so far (%s = %.4f) over to %s", self.monitor, float(score), best)

    def _carry_over(self, old_best: Path, source: Path, info: dict) -> str:
        """The checked best checkpoint in this run's folder (copied there if it is elsewhere);
        raises with the reason it cannot be used."""
        folder = source.resolve().parent
        real = old_best.resolve()
        if real.parent != folder:
            raise ValueError(f"it is not in the folder of the checkpoint being resumed ({folder})")
        if not real.is_file():
            raise ValueError("no such file")
        target = Path(self.dirpath) / real.name
        if target.resolve() == real:  # resuming into the same run directory
            _check_same_model(real, real, info)
            return str(target)

        def copy_checked(tmp: Path) -> None:  # the copy is what is checked, and later loaded
            shutil.copyfile(real, tmp)
            _check_same_model(tmp, real, info)

        atomic_write(target, copy_checked)
        return str(target)


def _check_same_model(path: Path, shown: Path, info: dict) -> None:
    """Raise unless ``path`` is a recsys checkpoint (read weights-only) of the model of ``info``."""
    ckpt = load_checkpoint(path, key="best_model_path", shown=shown)
    ours, theirs = info.get("config") or {}, ckpt["recsys"]["config"]
    if theirs.get("model") != ours.get("model") or ckpt["recsys"].get("num_items") != info.get("num_items"):
        raise ValueError("it is a checkpoint of another model or catalogue than the one being resumed")


class RandomState(Callback):
    """Every random generator of training, saved with each checkpoint and restored on resume, so
    that a resumed run repeats the uninterrupted one exactly (bit-identical on CPU).

    Saved (``state_dict``, in every checkpoint: recsys writes them at the end of an epoch): the
    global generators of torch (CPU and every CUDA device: dropout), numpy and Python's ``random``,
    and the ``generator`` of every objective term and model part that owns one (sampled negatives,
    the language model's per-step sample of items). The data order needs no state: the training
    sampler's permutation is seeded with ``data.seed + epoch``.

    Restored at the start of the first epoch after resuming, not when the checkpoint is read, and
    together with the random draws the loaders make: a DataLoader draws its base seed from torch's
    generator whenever it creates an iterator, and Lightning creates them at other moments in the
    first epoch of a ``fit`` than in later ones. An uninterrupted run creates each later epoch's
    training iterator after ``on_train_epoch_start`` (one draw; with persistent workers it only
    resets the one it has) and its persistent evaluation iterators once, at the first validation;
    after resuming, Lightning reuses a training iterator it made before training started. So here
    the persistent evaluation iterators are created first, then the generators restored, then a
    training iterator created (and dropped, or, with workers, the persistent one reset, which also
    makes it read this epoch's order): the epoch then sees every generator exactly as the
    uninterrupted run did. A checkpoint without this state (an older recsys) resumes as before,
    with one warning line: close, not identical.
    """

    def __init__(self) -> None:
        self._module: pl.LightningModule | None = None
        self._pending: dict[str, Any] | None = None
        self._resuming = False  # the checkpoint being read is resumed (not a best one evaluated)

    @property
    def state_key(self) -> str:
        return "RandomState"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._module = pl_module

    def state_dict(self) -> dict[str, Any]:
        gens = {name: g.get_state() for name, g in _generators(self._module)}
        return {"global": _global_random_state(), "generators": gens}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._resuming = trainer.state.fn == TrainerFn.FITTING
        if self._resuming and self.state_key not in (checkpoint.get("callbacks") or {}):
            log.warning(
                "ckpt_path=%s has no random generator state (written by an older recsys): the resumed run "
                "continues close to, but not exactly like, an uninterrupted one", trainer.ckpt_path,
            )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._resuming:
            self._pending = state_dict

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        for loader in _loaders(trainer.val_dataloaders):
            if loader.persistent_workers and loader.num_workers > 0:
                iter(loader)  # its one base-seed draw, made before the restored sequence as in an uninterrupted run
        _set_global_random_state(state.get("global") or {})
        own = dict(_generators(pl_module))
        for name, saved in (state.get("generators") or {}).items():
            if name in own:
                own[name].set_state(saved)
        for loader in _loaders(trainer.train_dataloader):
            iter(loader)  # what an uninterrupted run does at this point of the epoch (see above)


def _generators(module: pl.LightningModule | None) -> list[tuple[str, torch.Generator]]:
    """(name, generator) of every objective term and model part with a ``generator``."""
    if module is None:
        return []
    parts = list(module.named_modules())  # "model.items.tuner", ...
    objective = getattr(module, "objective", None)
    parts += [(f"objective.{name}", term) for name, term in (getattr(objective, "terms", None) or {}).items()]
    return [(name, part.generator) for name, part in parts if isinstance(getattr(part, "generator", None), torch.Generator)]


def _global_random_state() -> dict[str, Any]:
    """The global generators' states in types a weights-only load accepts (no numpy arrays)."""
    key, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": key, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_global_random_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("Resumed: the checkpoint has %d CUDA generators, this machine %d GPUs: theirs are not restored",
                        len(cuda), torch.cuda.device_count())


def _loaders(loaders: Any) -> list[DataLoader]:
    """The DataLoaders in what ``trainer.train_dataloader`` returns (a loader, or a list or dict of them)."""
    if isinstance(loaders, DataLoader):
        return [loaders]
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    return [loader for item in (loaders or []) for loader in _loaders(item)] if isinstance(loaders, (list, tuple)) else []


def write_summary(sweep_dir: Path, rows: list[dict[str, Any]], shown_metrics: list[str] | None = None) -> str:
    """Write summary.csv (every column) and summary.md in ``sweep_dir``; returns the Markdown table.

    The Markdown table keeps the swept values, the status, ``shown_metrics`` (all metrics if None)
    and the error column; the full overrides and every metric are in the CSV. A sweep over
    ``seed`` also gets the mean and standard deviation of every metric per configuration (the
    swept values other than the seed): summary_by_config.csv, and a second table in summary.md.
    """
    columns = list(dict.fromkeys(c for row in rows for c in row))
    write_rows_csv(sweep_dir / "summary.csv", rows)

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return " ".join(str(value if value is not None else "").split()).replace("|", "\\|")

    metric_columns = [c for c in columns if c.startswith(("val/", "test/"))]
    keep = metric_columns if shown_metrics is None else [c for c in shown_metrics if c in metric_columns]
    shown = [c for c in columns if c not in metric_columns and c not in ("overrides", "error")]
    shown = shown[: shown.index("status") + 1] + keep + shown[shown.index("status") + 1 :] if "status" in shown else shown + keep
    shown += ["error"] if "error" in columns else []
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in shown) + " |" for row in rows]
    table = "\n".join(lines) + "\n"
    groups = seed_groups(rows, metric_columns)  # several seeds: mean and std per configuration
    if groups:
        write_rows_csv(sweep_dir / "summary_by_config.csv", groups)
        table += "\nMean ± standard deviation over seeds, per configuration (summary_by_config.csv):\n\n"
        table += format_groups(groups, keep)
    write_text_atomic(sweep_dir / "summary.md", table)
    return table


def headline_metrics(optimized_metric: str) -> list[str]:
    """The columns of the Markdown summary: the optimised metric and every test metric at its K."""
    k = optimized_metric.rpartition("@")[2]
    return [optimized_metric] + [f"test/{name}@{k}" for name in METRIC_NAMES]


# (jobs, failed jobs, summary.csv) of every multirun that ended in this process, for the exit status
_sweep_outcomes: list[tuple[int, int, Path]] = []


def take_sweep_outcomes() -> list[tuple[int, int, Path]]:
    """(jobs, failed jobs, summary.csv) of the multiruns that ended since the last call."""
    outcomes = list(_sweep_outcomes)
    _sweep_outcomes.clear()
    return outcomes


class SweepSummary(HydraCallback):
    """At the end of a multirun, collects every job's metrics into summary.csv / summary.md and
    records how many jobs failed, diverged ones included (``recsys train -m`` then exits with a
    non-zero status)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():
            return
        rows = sweep_rows(sweep_dir)
        if not rows:
            return
        shown = headline_metrics(str(config.optimized_metric))
        table = write_summary(sweep_dir, rows, shown)
        metric = next((m for m in ("test/ndcg@10", shown[0]) if any(m in row for row in rows)), shown[0])
        draw_quietly(str(sweep_dir), lambda: draw_sweep(sweep_dir, rows, seed_groups(rows), metric))
        failed = sum(row["status"] != "ok" for row in rows)  # "failed" or "diverged"
        diverged = sum(row["status"] == "diverged" for row in rows)
        _sweep_outcomes.append((len(rows), failed, sweep_dir / "summary.csv"))
        how = f" ({diverged} diverged)" if diverged else ""
        print(f"\nSweep summary: {len(rows)} jobs, {failed} failed{how} ({sweep_dir / 'summary.csv'}):\n{table}")
