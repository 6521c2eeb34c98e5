"""``recsys train``: build everything from the config, train, test the best checkpoint, report.

This module knows no particular dataset, model or encoder: each is built from ``_target_``.
:func:`validate_config` checks what can be checked without data (cheap, before the run starts);
:func:`check_against_data` what needs the prepared data (before the model is built).
"""

from __future__ import annotations

import logging
import math
import operator
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars
import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from recsys_cli import __version__
from recsys_cli.compose import group_options
from recsys_cli.config_paths import CONF_DIR
from recsys_cli.data.datamodule import SequenceDataModule
from recsys_cli.data.prepare_stats import repeat_share
from recsys_cli.data.prepared_data import PreparedData
from recsys_cli.data.windows import parse_scales
from recsys_cli.errors import ConfigError, RecsysError
from recsys_cli.io import atomic_write, load_checkpoint, write_json_atomic, write_text_atomic
from recsys_cli.training.callbacks import AtomicCheckpointIO
from recsys_cli.training.metrics import METRIC_NAMES
from recsys_cli.training.module import RecommenderModule

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
# the sections train() builds from (a '~group' override may not remove them)
REQUIRED_SECTIONS = ("paths", "data", "scales", "model", "loss", "optimizer", "trainer", "callbacks", "logger", "metrics")
# metrics.filter_seen=auto filters seen items when fewer events than this repeat an item of the user
AUTO_FILTER_SEEN_MAX_REPEAT_SHARE = 0.05
# parts of the run's config that must match a checkpoint it resumes from (the rest may change,
# e.g. trainer.max_epochs to train longer)
RESUME_MUST_MATCH = ("model", "scales", "data.name", "data.reader", "data.preparation", "data.split", "data.max_len")


# -- checks ------------------------------------------------------------------------------------
def _int_at_least(value: Any, key: str, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    try:
        ok = not isinstance(value, bool) and operator.index(value) >= low
    except TypeError:
        ok = False
    if not ok:
        raise ConfigError(f"{key}={value!r}: use an integer >= {low}")


def metric_names(ks: list[int]) -> list[str]:
    """Every metric a run computes for cut-offs ``ks``, e.g. ``ndcg@10``."""
    return [f"{name}@{k}" for name in METRIC_NAMES for k in ks]


def _check_metric_name(key: str, metric: str, ks: list[int], stages: tuple[str, ...]) -> None:
    stage, _, name = str(metric).partition("/")
    if stage not in stages or name not in metric_names(ks):
        k = 10 if 10 in ks else ks[0]
        examples = ", ".join(f"{s}/ndcg@{k}" for s in stages)
        raise ConfigError(
            f"{key}={metric!r} is not a computed metric; use <stage>/<metric>@K with stage in "
            f"{'/'.join(stages)}, metric in {'/'.join(METRIC_NAMES)} and K in metrics.ks={ks} (e.g. {examples})"
        )


def validate_config(cfg: DictConfig) -> None:
    """Checks that need no data: types and ranges of the main keys, metric names, the checkpoint
    to resume from. Raises ConfigError (one line naming the key) on the first problem."""
    for section in REQUIRED_SECTIONS:
        if section not in cfg.keys():
            options = ", ".join(group_options(section)) if (CONF_DIR / section).is_dir() else ""
            hint = f"; choose one of its options ({options})" if options else ""
            raise ConfigError(f"the config has no '{section}' section (removed with ~{section}?){hint}")
    for key, low in (("seed", 0), ("data.max_len", 2), ("data.batch_size", 1), ("data.eval_batch_size", 1)):
        _int_at_least(OmegaConf.select(cfg, key), key, low)
    _int_at_least(OmegaConf.select(cfg, "trainer.max_epochs"), "trainer.max_epochs", -1, allow_none=True)
    ks = cfg.metrics.ks
    if not isinstance(ks, ListConfig) or not ks:
        raise ConfigError(f"metrics.ks={ks!r}: use a non-empty list of cut-offs, e.g. [10, 20]")
    for i, k in enumerate(ks):
        _int_at_least(k, f"metrics.ks[{i}]", 1)
    ks = [int(k) for k in ks]
    if cfg.metrics.filter_seen not in (True, False, "auto"):
        raise ConfigError(f"metrics.filter_seen={cfg.metrics.filter_seen!r}: use true, false or auto")
    # selecting models on test metrics would leak the test set into the choice: validation only
    _check_metric_name("optimized_metric", cfg.optimized_metric, ks, ("val",))
    for name, callback in cfg.callbacks.items():
        monitor = callback.get("monitor") if isinstance(callback, DictConfig) else None
        if monitor is not None and monitor != "train/loss":
            _check_metric_name(f"callbacks.{name}.monitor", monitor, ks, ("val",))
    parse_scales(cfg.scales.windows, cfg.scales.max_events)
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file; give a <run>/checkpoints/last.ckpt")


def check_against_data(cfg: DictConfig, dm: SequenceDataModule) -> None:
    """Config checks that need the prepared data (still before any training)."""
    data = dm.load()
    too_big = [k for k in cfg.metrics.ks if k > data.num_items]
    if too_big:
        raise ConfigError(
            f"metrics.ks: K={too_big[0]} is larger than the catalogue ({data.num_items} items); "
            f"use K <= {data.num_items}"
        )
    scales = parse_scales(cfg.scales.windows, cfg.scales.max_events)
    timed = [s.name for s in scales if s.seconds is not None]
    if timed and not data.has_time:
        raise ConfigError(
            f"scales: {timed} use durations but dataset '{dm.name}' has no timestamps; "
            "use count windows ({last: N}) or null, e.g. scales=last_5_20_all"
        )


def _flat(cfg: DictConfig, key: str) -> dict[str, Any]:
    """``{dotted key: value}`` for every leaf under ``key`` (resolved)."""
    node = OmegaConf.select(cfg, key)
    if not isinstance(node, DictConfig):
        return {key: OmegaConf.to_container(node, resolve=True) if isinstance(node, ListConfig) else node}
    out: dict[str, Any] = {}
    for child in node:
        out.update(_flat(cfg, f"{key}.{child}"))
    return out


def check_resume(cfg: DictConfig) -> int:
    """Raise unless ``cfg.ckpt_path`` is a recsys checkpoint of a run with this model and data;
    returns the number of epochs the checkpoint has finished."""
    ckpt = load_checkpoint(cfg.ckpt_path, key="ckpt_path")
    stored = OmegaConf.create(ckpt["recsys"]["config"])
    run_config = Path(cfg.ckpt_path).resolve().parent.parent / "config.yaml"
    for key in RESUME_MUST_MATCH:
        old, new = _flat(stored, key), _flat(cfg, key)
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                raise ConfigError(
                    f"ckpt_path={cfg.ckpt_path}: the checkpoint's run had {name}={old.get(name)!r} but this "
                    f"config has {new.get(name)!r}; resume with the run's overrides (see {run_config})"
                )
    return int(ckpt.get("epoch", -1)) + 1


# -- building ----------------------------------------------------------------------------------
def build(node: DictConfig, where: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)`` with user errors as one-line ConfigErrors naming ``where``.

    A RecsysError raised by the constructor passes through unchanged; a wrong argument name or
    type (TypeError) or a setting Lightning rejects (MisconfigurationException, e.g. a GPU
    accelerator on a machine without one) becomes a ConfigError; anything else is a bug and
    propagates.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, RecsysError):
            raise cause from None
        if isinstance(cause, (TypeError, MisconfigurationException)):
            target = node.get("_target_") if isinstance(node, DictConfig) else None
            raise ConfigError(f"{where} ({target}): {cause}; check the keys under {where}") from None
        raise


def build_datamodule(cfg: DictConfig) -> SequenceDataModule:
    """The data module (it reads ``cfg.scales`` through ``data.scales`` and computes their features)."""
    return build(cfg.data, "data", _recursive_=True)


def resolve_filter_seen(setting: bool | str, data: PreparedData) -> bool:
    """``metrics.filter_seen``: true / false as given; ``auto`` filters the items a user already had
    unless users repeat items (shop logs: viewed again, carted, bought), where filtering would make
    every repeated target impossible to hit."""
    if setting != "auto":
        return bool(setting)
    share = data.stats.get("repeat_share")  # a preparation statistic, stored with the cache
    if share is None:  # data built without preparation (e.g. by hand)
        share = repeat_share(data)
    filtered = share < AUTO_FILTER_SEEN_MAX_REPEAT_SHARE
    log.info(
        "metrics.filter_seen=auto: %.1f%% of events repeat an item of the user, so seen items are %s",
        100 * share,
        "filtered from the ranking" if filtered else "kept in the ranking (set metrics.filter_seen=true to filter)",
    )
    return filtered


def build_module(cfg: DictConfig, dm: SequenceDataModule, run_info: dict) -> RecommenderModule:
    data = dm.load()
    model = build(
        cfg.model,
        "model",
        num_items=data.num_items,
        num_event_types=data.num_event_types,
        num_categories=data.num_categories,
    )
    return RecommenderModule(
        model=model,
        loss=build(cfg.loss, "loss"),
        optimizer=build(cfg.optimizer, "optimizer"),
        ks=cfg.metrics.ks,
        num_items=data.num_items,
        filter_seen=resolve_filter_seen(cfg.metrics.filter_seen, data),
        run_info=run_info,
    )


def make_run_info(cfg: DictConfig, dm: SequenceDataModule) -> dict:
    """What a checkpoint carries so that ``recsys evaluate`` needs nothing else."""
    data = dm.load()
    return {
        "format": CHECKPOINT_FORMAT,
        "program": "recsys",
        "version": __version__,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "item_vocab": [str(v) for v in data.item_vocab],
        "num_items": data.num_items,
        "data_fingerprint": data.fingerprint,
    }


def save_vocab(run_dir: Path, dm: SequenceDataModule) -> None:
    data = dm.load()
    vocab_dir = run_dir / "vocab"

    def write(name: str, frame: polars.DataFrame) -> None:
        atomic_write(vocab_dir / f"{name}.parquet", lambda tmp: frame.write_parquet(tmp))

    items = {"index": np.arange(1, data.num_items + 1), "item_id": [str(v) for v in data.item_vocab]}
    if data.item_titles is not None:
        items["title"] = data.item_titles
    write("items", polars.DataFrame(items))
    write("users", polars.DataFrame({"index": np.arange(data.num_users), "user_id": [str(v) for v in data.user_vocab]}))


def format_table(results: dict[str, dict[str, float]], width: int = 8) -> str:
    """Metrics as a text table: one row per metric, one column per result set (e.g. val, test)."""
    columns = [c for c in results if results[c]]
    names = list(dict.fromkeys(n for c in columns for n in results[c]))
    if not names:
        return "(no metrics)"
    first = max([len(n) for n in names] + [6])
    width = max([width] + [len(c) for c in columns])
    lines = [f"{'metric':<{first}}  " + "  ".join(f"{c:>{width}}" for c in columns)]
    for name in names:
        lines.append(f"{name:<{first}}  " + "  ".join(f"{results[c].get(name, math.nan):{width}.4f}" for c in columns))
    return "\n".join(lines)


def build_trainer(cfg: DictConfig, run_dir: Path, with_callbacks: bool = True) -> pl.Trainer:
    callbacks = [build(c, f"callbacks.{name}") for name, c in cfg.callbacks.items()] if with_callbacks else []
    loggers = [build(c, f"logger.{name}") for name, c in cfg.logger.items()]
    return build(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
    )


def close_loggers(trainer: pl.Trainer | None, status: str) -> None:
    """Flush and close every logger, so that the next job of a sweep starts a fresh run (wandb
    keeps one global run per process otherwise)."""
    if trainer is None:
        return
    for logger in trainer.loggers:
        try:
            logger.finalize(status)
        except Exception as err:  # noqa: BLE001 - a logger that cannot flush must not hide the result
            log.warning("Could not finalize logger %s: %s", type(logger).__name__, err)
        finish: Callable | None = getattr(getattr(logger, "_experiment", None), "finish", None)
        if finish is not None:
            finish()


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The path kept by the monitoring ModelCheckpoint (the first one with a ``monitor``)."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
            if Path(callback.best_model_path).exists():
                return callback.best_model_path
    return None


# -- the run -----------------------------------------------------------------------------------
def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and test one configuration; writes the run directory; returns the report.

    The run directory gets ``config.yaml`` (resolved), ``vocab/``, ``checkpoints/best.ckpt`` and
    ``last.ckpt``, ``metrics.json`` and the loggers' files.
    """
    validate_config(cfg)
    first_epoch = check_resume(cfg) if cfg.ckpt_path is not None else 0
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)

    dm = build_datamodule(cfg)
    dm.load()
    check_against_data(cfg, dm)
    summary = dm.summary()
    log.info("Data: %s", summary)
    run_info = make_run_info(cfg, dm)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    save_vocab(run_dir, dm)

    # the model's initial weights must not depend on whether the data came from the cache
    pl.seed_everything(cfg.seed, workers=True)
    module = build_module(cfg, dm, run_info)
    trainer = None
    status = "failed"
    try:
        trainer = build_trainer(cfg, run_dir)
        for logger in trainer.loggers:
            logger.log_hyperparams(run_info["config"])
        started = time.perf_counter()
        epochs = 0
        if module.model.requires_training:
            trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)
            epochs = trainer.current_epoch
            best = _best_checkpoint(trainer)
            trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)
            trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)
        else:
            mask = dm.train_events_mask()
            module.model.fit(dm.data.items[mask], dm.data.user_of_event[mask])
            trainer.validate(module, datamodule=dm, verbose=False)
            trainer.test(module, datamodule=dm, verbose=False)
            best = str(run_dir / "checkpoints" / "best.ckpt")
            trainer.save_checkpoint(best)
        train_seconds = time.perf_counter() - started
        status = "success"
    finally:
        close_loggers(trainer, status)

    report = {
        "status": "ok",
        "val": module.results.get("val", {}),
        "test": module.results.get("test", {}),
        "optimized_metric": cfg.optimized_metric,
        "best_checkpoint": best,
        "epochs": epochs,
        "resumed_from": cfg.ckpt_path,
        "train_seconds": round(train_seconds, 3),
        "seconds_per_epoch": round(train_seconds / (epochs - first_epoch), 3) if epochs > first_epoch else None,
        "data": summary,
        "filter_seen": module.filter_seen,
        "scale_weights": module.scale_weight_history,
        "version": __version__,
    }
    report["objective"] = objective(report, cfg.optimized_metric)
    if trainer.is_global_zero:
        write_json_atomic(run_dir / "metrics.json", report)
        if module.scale_weight_history:
            write_json_atomic(run_dir / "scale_weights.json", module.scale_weight_history)
        seen = "filtered from" if module.filter_seen else "kept in"
        print(f"\nRun directory: {run_dir}\nSeen items {seen} the ranking (metrics.filter_seen)")
        print(format_table({"val": report["val"], "test": report["test"]}))
        if module.scale_weight_history:
            last = {k: round(v, 3) for k, v in module.scale_weight_history[-1].items() if k != "epoch"}
            print(f"Scale weights (last epoch): {last}")
        if best:
            print(f"Evaluate again with: recsys evaluate ckpt={best}")
    return report


_OBJECTIVE = re.compile(r"^(val|test)/(.+)$")


def objective(report: dict[str, Any], metric: str) -> float:
    """The value of ``metric`` (``<stage>/<name>``, e.g. ``val/ndcg@10``) in a train report."""
    match = _OBJECTIVE.match(str(metric))
    value = report.get(match.group(1), {}).get(match.group(2)) if match else None
    if value is None:
        raise RecsysError(f"optimized_metric={metric!r} was not computed; use e.g. val/ndcg@10")
    return float(value)
