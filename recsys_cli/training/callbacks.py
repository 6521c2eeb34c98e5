"""Lightning and Hydra callbacks: atomic checkpoints, the sweep summary table."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback as HydraCallback
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig

from recsys_cli.io import atomic_write, write_text_atomic

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints to a temporary file and renames it: an interrupted save never leaves a
    truncated ``best.ckpt`` / ``last.ckpt`` behind."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def _flatten_overrides(job_dir: Path) -> str:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return ""
    lines = [ln[2:].strip() for ln in path.read_text().splitlines() if ln.startswith("- ")]
    return " ".join(lines)


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory of a sweep: overrides, status and every final metric."""
    rows = []
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    for job in jobs:
        row: dict[str, Any] = {"job": int(job.name), "overrides": _flatten_overrides(job)}
        report = job / "metrics.json"
        if report.exists():
            result = json.loads(report.read_text())
            row["status"] = result.get("status", "ok")
            if result.get("error"):
                row["error"] = result["error"]
            for stage in ("val", "test"):
                for name, value in (result.get(stage) or {}).items():
                    row[f"{stage}/{name}"] = value
            if result.get("seconds_per_epoch") is not None:
                row["s/epoch"] = result["seconds_per_epoch"]
        else:
            row["status"] = "failed"
            row["error"] = "no metrics.json (the job died before reporting)"
        rows.append(row)
    return rows


def write_summary(sweep_dir: Path, rows: list[dict[str, Any]]) -> str:
    """Write summary.csv and summary.md in ``sweep_dir``; returns the Markdown table."""
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
        return str(value if value is not None else "").replace("|", "\\|")

    shown = [c for c in columns if c != "error"] + (["error"] if "error" in columns else [])
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in shown) + " |" for row in rows]
    table = "\n".join(lines) + "\n"
    write_text_atomic(sweep_dir / "summary.md", table)
    return table


class SweepSummary(HydraCallback):
    """At the end of a multirun, collects every job's metrics into summary.csv / summary.md."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():
            return
        rows = sweep_rows(sweep_dir)
        table = write_summary(sweep_dir, rows)
        print(f"\nSweep summary ({sweep_dir / 'summary.csv'}):\n{table}")
