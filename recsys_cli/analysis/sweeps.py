"""Sweep rows grouped by configuration: the mean and standard deviation over seeds.

A sweep's rows (one per job: the swept values, ``status`` and every final metric,
:func:`sweep_rows`) are grouped by their swept values other than
``seed``: one configuration per group. Each group gets its number of finished runs, its seeds,
and per metric the mean and the sample standard deviation (``ddof=1``; none for a single run)
over its finished runs (status ``ok``); failed runs are counted, never averaged.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from recsys_cli.io import write_text_atomic

SEED = "seed"
# the columns of a sweep row that are neither swept values nor metrics
ROW_COLUMNS = ("job", "status", "s/epoch", "error", "overrides")


def write_rows_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as CSV atomically, one column per key in order of first appearance."""
    columns = list(dict.fromkeys(c for row in rows for c in row)) or ["run"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def swept_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The swept values' columns of ``rows`` (in their order), ``seed`` included."""
    columns = list(dict.fromkeys(c for row in rows for c in row))
    return [c for c in columns if c not in ROW_COLUMNS and not c.startswith(("val/", "test/"))]


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The metric columns of ``rows`` (``val/...``, ``test/...``), in their order."""
    columns = list(dict.fromkeys(c for row in rows for c in row))
    return [c for c in columns if c.startswith(("val/", "test/"))]


def seed_groups(rows: list[dict[str, Any]], metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per configuration (the swept values other than ``seed``), in order of first
    appearance: those values, ``runs`` (finished), ``failed``, ``seeds``, and for every metric
    ``<metric>`` (mean) and ``<metric> std``. Empty when the sweep does not sweep ``seed``."""
    swept = swept_columns(rows)
    if SEED not in swept:
        return []
    config = [c for c in swept if c != SEED]
    metrics = metric_columns(rows) if metrics is None else metrics
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row.get(c, "")) for c in config), []).append(row)
    out = []
    for key, members in groups.items():
        done = [r for r in members if r.get("status") == "ok"]
        group: dict[str, Any] = dict(zip(config, key, strict=True))
        group.update(runs=len(done), failed=len(members) - len(done), seeds=",".join(str(r.get(SEED, "")) for r in done))
        for metric in metrics:
            values = np.array([float(r[metric]) for r in done if _number(r.get(metric))])
            group[metric] = float(values.mean()) if len(values) else None
            group[f"{metric} std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        out.append(group)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def format_groups(groups: list[dict[str, Any]], metrics: list[str]) -> str:
    """The configurations as a Markdown table, each metric as ``mean ± std``."""
    if not groups:
        return ""
    config = [c for c in groups[0] if c not in ("runs", "failed", "seeds") and c not in metrics and not c.endswith(" std")]
    header = [*config, "runs", "seeds", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        cells = [str(group[c]) for c in config] + [str(group["runs"]) + (f" ({group['failed']} failed)" if group["failed"] else ""), group["seeds"]]
        for metric in metrics:
            mean, std = group.get(metric), group.get(f"{metric} std")
            cells.append("" if mean is None else f"{mean:.4f}" + ("" if std is None else f" ± {std:.4f}"))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


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
