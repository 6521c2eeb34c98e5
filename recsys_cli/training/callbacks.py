"""Lightning and Hydra callbacks: atomic checkpoints, resumable best checkpoints, the sweep summary."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.experimental.callback import Callback as HydraCallback
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint

from recsys_cli.io import atomic_write, write_text_atomic
from recsys_cli.training.metrics import METRIC_NAMES

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints to a temporary file and renames it: an interrupted save never leaves a
    truncated ``best.ckpt`` / ``last.ckpt`` behind."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


class RunCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint that resumes correctly into a new run directory.

    ``recsys train ... ckpt_path=OLD/checkpoints/last.ckpt`` writes to a new run directory. Lightning
    then forgets the interrupted run's best score, so the first epoch after resuming would become
    "best" even if an earlier epoch was better. Here the interrupted run's best checkpoint is
    copied into the new directory with its score, so the final test uses the best epoch of the
    whole run. Without ``monitor`` (the ``last.ckpt`` writer) there is nothing to carry over.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir = state_dict.get("dirpath")
        if old_dir is None or self.dirpath is None or Path(old_dir) == Path(self.dirpath):
            super().load_state_dict(state_dict)
            return
        old_best, score = state_dict.get("best_model_path"), state_dict.get("best_model_score")
        if not self.monitor or score is None or not old_best or not Path(old_best).is_file():
            return
        new_best = str(Path(self.dirpath) / Path(old_best).name)
        atomic_write(new_best, lambda tmp: shutil.copyfile(old_best, tmp))
        self.best_model_path = self.kth_best_model_path = new_best
        self.best_model_score = self.kth_value = score
        self.best_k_models = {new_best: score}
        log.info("Resumed: carried the best checkpoint so far (%s = %.4f) over to %s", self.monitor, float(score), new_best)


def _job_overrides(job_dir: Path) -> list[str]:
    """The overrides Hydra recorded for one job (``<job>/.hydra/overrides.yaml``)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return []
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory of a sweep: the swept values, status and every final metric.

    Overrides that differ between jobs get a column each (``model/encoder``: ``gru``); ``overrides``
    keeps every override of the job.
    """
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    overrides = {job: _job_overrides(job) for job in jobs}
    values = {job: dict(item.partition("=")[::2] for item in items) for job, items in overrides.items()}
    keys = list(dict.fromkeys(key for job in jobs for key in values[job]))
    swept = [key for key in keys if len({values[job].get(key) for job in jobs}) > 1]
    rows = []
    for job in jobs:
        row: dict[str, Any] = {"job": int(job.name)}
        row.update({key.lstrip("+~"): values[job].get(key, "") for key in swept})
        report = job / "metrics.json"
        if report.exists():
            result = json.loads(report.read_text())
            row["status"] = result.get("status", "ok")
            for stage in ("val", "test"):
                for name, value in (result.get(stage) or {}).items():
                    row[f"{stage}/{name}"] = value
            if result.get("seconds_per_epoch") is not None:
                row["s/epoch"] = result["seconds_per_epoch"]
            if result.get("error"):
                row["error"] = result["error"]
        else:
            row["status"] = "failed"
            row["error"] = "no metrics.json (the job died before reporting)"
        row["overrides"] = " ".join(overrides[job])
        rows.append(row)
    return rows


def write_summary(sweep_dir: Path, rows: list[dict[str, Any]], shown_metrics: list[str] | None = None) -> str:
    """Write summary.csv (every column) and summary.md in ``sweep_dir``; returns the Markdown table.

    The Markdown table keeps the swept values, the status, ``shown_metrics`` (all metrics if None)
    and the error column; the full overrides and every metric are in the CSV.
    """
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(sweep_dir / "summary.csv", buffer.getvalue())

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
    write_text_atomic(sweep_dir / "summary.md", table)
    return table


def headline_metrics(optimized_metric: str) -> list[str]:
    """The columns of the Markdown summary: the optimised metric and every test metric at its K."""
    k = optimized_metric.rpartition("@")[2]
    return [optimized_metric] + [f"test/{name}@{k}" for name in METRIC_NAMES]


class SweepSummary(HydraCallback):
    """At the end of a multirun, collects every job's metrics into summary.csv / summary.md."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():
            return
        rows = sweep_rows(sweep_dir)
        if not rows:
            return
        shown = headline_metrics(str(config.optimized_metric))
        table = write_summary(sweep_dir, rows, shown)
        failed = sum(row["status"] != "ok" for row in rows)
        print(f"\nSweep summary: {len(rows)} jobs, {failed} failed ({sweep_dir / 'summary.csv'}):\n{table}")
