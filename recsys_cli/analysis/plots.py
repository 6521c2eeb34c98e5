"""The pictures of a run and of a sweep (matplotlib, headless ``Agg``), drawn from the run's files.

Every picture has a data function (the numbers, read from ``metrics.json`` or
``logs/metrics.csv``) and a figure function that draws exactly those numbers, so that what is
drawn can be checked against the files:

- ``learning_curves.png``: every training loss term per epoch (``train/<term>``, the summed
  ``train/loss``) and validation NDCG@10 per epoch (``logs/metrics.csv``, the CSV logger's file).
- ``scale_weights.png``: each time-window scale's mean fusion weight per epoch (multi-scale
  models; ``metrics.json``'s ``scale_weights``).
- ``metrics_by_k.png``: test NDCG, HR and MRR at every K (``metrics.json``'s ``test``).
- ``metrics_by_bucket.png``: test NDCG@10 and HR@10 per bucket of the target's training count
  (cold, rare, head), with each bucket's number of cases.
- ``sweep.png`` (a sweep folder): NDCG@10 per configuration, the mean over seeds with one standard
  deviation, and every seed's value as a dot.

:func:`draw_run` and :func:`draw_sweep` draw what a folder's files allow and skip the rest;
:func:`draw_quietly` is what training calls: a picture that cannot be drawn costs one warning line,
never the run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsys_cli.io import atomic_write

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
CURVE_METRIC = "val/ndcg@10"
BY_K_METRICS = ("ndcg", "hr", "mrr")
BUCKETS = ("cold", "rare", "head")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: no display is ever needed
    import matplotlib.pyplot as plt

    return plt


# -- data ------------------------------------------------------------------------------------


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def learning_curve_data(metrics_csv: Path) -> dict[str, Any]:
    """Per epoch, from the CSV logger's ``logs/metrics.csv``: ``train`` (``{term: {epoch: value}}``
    for ``train/loss`` and every ``train/<term>`` logged per epoch) and ``val`` (``{epoch:
    val/ndcg@10}``). An epoch's first validation is kept, and none after the last trained epoch:
    the final validation of the best checkpoint, logged after training, is not a point of the
    curve."""
    train: dict[str, dict[int, float]] = {}
    val: dict[int, float] = {}
    with open(metrics_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            epoch = _float(row.get("epoch"))
            if epoch is None:
                continue
            epoch = int(epoch)
            for column, text in row.items():
                value = _float(text)
                if value is None or not column or not column.startswith("train/") or column.endswith("_step"):
                    continue
                name = column.removeprefix("train/").removesuffix("_epoch")
                train.setdefault(name, {})[epoch] = value
            value = _float(row.get(CURVE_METRIC))
            if value is not None and epoch not in val:
                val[epoch] = value
    trained = max((e for values in train.values() for e in values), default=None)
    if trained is not None:  # the final validation is logged after the last epoch, as the next one
        val = {e: v for e, v in val.items() if e <= trained}
    return {"train": train, "val": val}


def scale_weight_data(report: dict[str, Any]) -> dict[str, dict[int, float]]:
    """``{scale: {epoch: mean weight}}`` from ``metrics.json``'s ``scale_weights`` (empty without)."""
    out: dict[str, dict[int, float]] = {}
    for entry in report.get("scale_weights") or []:
        for name, value in entry.items():
            if name != "epoch":
                out.setdefault(name, {})[int(entry["epoch"])] = float(value)
    return out


def metrics_by_k_data(report: dict[str, Any], stage: str = "test") -> dict[str, dict[int, float]]:
    """``{metric: {K: value}}`` for NDCG, HR and MRR at every K of ``metrics.json``'s ``stage``."""
    out: dict[str, dict[int, float]] = {}
    for key, value in (report.get(stage) or {}).items():
        name, _, k = key.partition("@")
        if name in BY_K_METRICS and k.isdigit():
            out.setdefault(name, {})[int(k)] = float(value)
    return {name: dict(sorted(values.items())) for name, values in out.items()}


def bucket_data(report: dict[str, Any], k: int = 10, stage: str = "test") -> dict[str, dict[str, float]]:
    """``{bucket: {"cases", "ndcg@K", "hr@K"}}`` for the buckets of ``stage`` that have cases."""
    results = report.get(stage) or {}
    out = {}
    for bucket in BUCKETS:
        cases = results.get(f"{bucket}/cases")
        if cases:
            out[bucket] = {"cases": int(cases), **{f"{m}@{k}": float(results.get(f"{bucket}/{m}@{k}", 0.0)) for m in ("ndcg", "hr")}}
    return out


def sweep_chart_data(rows: list[dict[str, Any]], groups: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """``labels``, ``mean``, ``std`` and ``points`` (each configuration's values) of ``metric``:
    per configuration when the sweep has seeds (``groups``), else one bar per finished job."""
    from recsys_cli.analysis.sweeps import SEED, swept_columns

    swept = [c for c in swept_columns(rows) if c != SEED]
    def label(row: dict[str, Any]) -> str:
        return " ".join(f"{c}={row.get(c, '')}" for c in swept) or f"job {row.get('job')}"

    done = [r for r in rows if r.get("status") == "ok" and _float(str(r.get(metric))) is not None]
    if groups:
        labels = [label(g) for g in groups]
        points = [[float(r[metric]) for r in done if label(r) == name] for name in labels]
        mean = [g.get(metric) for g in groups]
        std = [g.get(f"{metric} std") or 0.0 for g in groups]
    else:
        labels = [label(r) if swept else f"job {r['job']}" for r in done]
        points = [[float(r[metric])] for r in done]
        mean, std = [p[0] for p in points], [0.0] * len(points)
    return {"metric": metric, "labels": labels, "mean": mean, "std": std, "points": points}


# -- figures ---------------------------------------------------------------------------------


def learning_curves_figure(data: dict[str, Any]):
    plt = _pyplot()
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name, values in sorted(data["train"].items()):
        epochs = sorted(values)
        loss_ax.plot(epochs, [values[e] for e in epochs], marker="o", label="loss (sum of the terms)" if name == "loss" else name)
    loss_ax.set(title="training loss terms per epoch", xlabel="epoch", ylabel="loss")
    if data["train"]:
        loss_ax.legend()
    epochs = sorted(data["val"])
    val_ax.plot(epochs, [data["val"][e] for e in epochs], marker="o", color="tab:green", label=CURVE_METRIC)
    val_ax.set(title="validation NDCG@10 per epoch", xlabel="epoch", ylabel="NDCG@10")
    fig.tight_layout()
    return fig


def scale_weights_figure(data: dict[str, dict[int, float]]):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in data.items():
        epochs = sorted(values)
        ax.plot(epochs, [values[e] for e in epochs], marker="o", label=name)
    ax.set(title="scale weights per epoch", xlabel="epoch", ylabel="mean fusion weight")
    ax.legend()
    fig.tight_layout()
    return fig


def metrics_by_k_figure(data: dict[str, dict[int, float]]):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in data.items():
        ks = list(values)
        ax.plot(ks, [values[k] for k in ks], marker="o", label=f"{name}@K")
    ax.set(title="test metrics by K", xlabel="K", ylabel="value", xscale="log")
    ax.legend()
    fig.tight_layout()
    return fig


def bucket_figure(data: dict[str, dict[str, float]], k: int = 10):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(data)
    width = 0.38
    for i, metric in enumerate((f"ndcg@{k}", f"hr@{k}")):
        xs = [j + (i - 0.5) * width for j in range(len(names))]
        ax.bar(xs, [data[b][metric] for b in names], width, label=metric)
    ax.set_xticks(range(len(names)), [f"{b}\n{data[b]['cases']:,} cases" for b in names])
    ax.set(title="test metrics by the target's training count", ylabel="value")
    ax.legend()
    fig.tight_layout()
    return fig


def sweep_figure(data: dict[str, Any]):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(data["labels"]) + 2), 4.5))
    xs = list(range(len(data["labels"])))
    ax.bar(xs, data["mean"], yerr=data["std"], capsize=6, color="tab:blue", alpha=0.6, label="mean ± std")
    for x, values in zip(xs, data["points"], strict=True):
        ax.plot([x] * len(values), values, "o", color="black", markersize=4)
    ax.set_xticks(xs, data["labels"], rotation=20, ha="right")
    low = min((v for p in data["points"] for v in p), default=0.0)
    ax.set_ylim(bottom=max(0.0, low * 0.9))
    ax.set(title=f"{data['metric']} per configuration", ylabel=data["metric"])
    fig.tight_layout()
    return fig


def save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    plt = _pyplot()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)
    return path


# -- folders ---------------------------------------------------------------------------------


def run_pictures(run_dir: Path) -> list[tuple[str, Callable[[], Any]]]:
    """(file name, figure maker) of every picture the run's files allow."""
    run_dir = Path(run_dir)
    report = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    pictures: list[tuple[str, Callable[[], Any]]] = []
    csv_path = run_dir / "logs" / "metrics.csv"
    if csv_path.is_file():
        pictures.append(("learning_curves.png", lambda: learning_curves_figure(learning_curve_data(csv_path))))
    weights = scale_weight_data(report)
    if weights:
        pictures.append(("scale_weights.png", lambda: scale_weights_figure(weights)))
    by_k = metrics_by_k_data(report)
    if by_k:
        pictures.append(("metrics_by_k.png", lambda: metrics_by_k_figure(by_k)))
    buckets = bucket_data(report)
    if buckets:
        pictures.append(("metrics_by_bucket.png", lambda: bucket_figure(buckets)))
    return pictures


def draw_run(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Draw every picture of the run folder into ``out_dir`` (default ``<run>/plots``)."""
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / PLOTS_DIR
    return [save(make(), out_dir / name) for name, make in run_pictures(run_dir)]


def draw_sweep(sweep_dir: Path, rows: list[dict[str, Any]], groups: list[dict[str, Any]], metric: str, out_dir: Path | None = None) -> Path | None:
    """``sweep.png``: ``metric`` per configuration (mean, std and seeds); None without data."""
    data = sweep_chart_data(rows, groups, metric)
    if not data["labels"]:
        return None
    return save(sweep_figure(data), (Path(out_dir) if out_dir is not None else Path(sweep_dir)) / "sweep.png")


def draw_quietly(what: str, draw: Callable[[], Any]) -> Any:
    """Call ``draw``; a failure is one warning line (pictures never fail a run)."""
    try:
        return draw()
    except Exception as err:  # noqa: BLE001 - a picture is never worth a run
        first = (str(err).strip().splitlines() or [""])[0][:200]
        log.warning("Could not draw the pictures of %s (%s: %s); the run's results are unaffected", what, type(err).__name__, first)
        return None
