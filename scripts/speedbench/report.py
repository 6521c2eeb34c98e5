"""What a benchmark run reports: per-contender summaries, ratios to the baseline contender (the
reference unless ``--baseline`` names another), the table, the JSON."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from .contenders import METRIC, Contender


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (a temp file in the same folder, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def time_to_levels(
    ndcg: list[float], cumulative: list[float], levels: list[float]
) -> dict[str, Any]:
    out = {}
    for level in levels:
        hit = next((i for i, v in enumerate(ndcg) if v >= level), None)
        out[f"{level:g}"] = None if hit is None else {"seconds": cumulative[hit], "epoch": hit + 1}
    return out


def summarise(c: Contender, levels: list[float], peak_gflops: float) -> dict[str, Any]:
    epochs = c.record["epochs"]
    step_s = sum(e["step_seconds"] for e in epochs)
    epoch_s = [e["epoch_seconds"] for e in epochs]
    positions = sum(e["positions"] for e in epochs)
    train_flops = sum(e["train_flops"] for e in epochs)
    eval_s = sum(e["eval_seconds"] for e in epochs)
    users = sum(e["eval_users"] for e in epochs)
    eval_flops = sum(e["eval_flops"] for e in epochs)
    train_gf = train_flops / step_s / 1e9 if step_s else 0.0
    eval_gf = eval_flops / eval_s / 1e9 if eval_s else 0.0
    ndcg = [e[METRIC] for e in epochs]
    cumulative = list(itertools.accumulate(epoch_s))
    padded = sum(e["padding_positions"] for e in epochs)
    no_target = sum(e["positions_without_target"] for e in epochs)
    total = sum(e["encoder_positions"] for e in epochs)
    mem = c.record["memory"]
    return {
        "positions_per_epoch": [e["positions"] for e in epochs],
        "train_positions_per_s": positions / step_s if step_s else 0.0,
        "train_positions_per_s_with_data": positions / sum(epoch_s) if sum(epoch_s) else 0.0,
        "seconds_per_epoch": statistics.fmean(epoch_s) if epoch_s else 0.0,
        "step_seconds_per_epoch": step_s / len(epochs) if epochs else 0.0,
        # the cost of one optimiser step (tasks differ in positions: cloze supervises fewer)
        "seconds_per_step": step_s / sum(e["steps"] for e in epochs) if epochs else 0.0,
        "train_gflops_per_s": train_gf,
        "train_peak_fraction": train_gf / peak_gflops if peak_gflops else None,
        "eval_users_per_s": users / eval_s if eval_s else 0.0,
        "eval_gflops_per_s": eval_gf,
        "eval_peak_fraction": eval_gf / peak_gflops if peak_gflops else None,
        "ndcg@10": ndcg,
        "best_ndcg@10": max(ndcg) if ndcg else None,
        "time_to_level": time_to_levels(ndcg, cumulative, levels),
        "padding_share": padded / total if total else 0.0,
        "no_target_share": no_target / total if total else 0.0,
        "memory_mb": mem["persistent_mb"]
        + max(mem["train_step_extra_mb"], mem["eval_batch_extra_mb"]),
    }


def add_ratios(results: dict[str, dict], baseline: str = "reference") -> None:
    """Each contender's ``ratios``: its figures over the baseline's (None without a baseline)."""
    ref = results.get(baseline, {}).get("summary")
    for res in results.values():
        s = res.get("summary")
        if s is None:
            continue
        if ref is None:
            s["ratios"] = None
            continue

        def ratio(key: str, s: dict = s) -> float | None:
            return s[key] / ref[key] if ref[key] else None

        s["ratios"] = {
            "throughput": ratio("train_positions_per_s"),
            "seconds_per_step": ratio("seconds_per_step"),
            "throughput_with_data": ratio("train_positions_per_s_with_data"),
            "seconds_per_epoch": ratio("seconds_per_epoch"),
            "eval_users_per_s": ratio("eval_users_per_s"),
            "memory": ratio("memory_mb"),
        }


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(payload: dict) -> str:
    levels = payload["config"]["levels"]
    head = [
        "contender", "pos/s", "x base", "s/epoch", "x base", "ms/step", "x base", "train GFLOP/s", "% peak",
        "eval users/s", "x base", "eval % peak", "mem MB", "x base", "NDCG@10 (last)", "best",
        *(f"s to {level:g}" for level in levels),
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in payload["contenders"].items():
        s = res.get("summary")
        if s is None:
            lines.append(f"| {name} | skipped: {res.get('skipped', '?')} |")
            continue
        r = s["ratios"] or {}
        ttl = []
        for level in levels:
            t = s["time_to_level"][f"{level:g}"]
            ttl.append("-" if t is None else f"{t['seconds']:.3g} (ep {t['epoch']})")
        row = [
            name,
            fmt(s["train_positions_per_s"], ".0f"), fmt(r.get("throughput")),
            fmt(s["seconds_per_epoch"], ".2f"), fmt(r.get("seconds_per_epoch")),
            fmt(1000 * s["seconds_per_step"], ".1f"), fmt(r.get("seconds_per_step")),
            fmt(s["train_gflops_per_s"], ".2f"), fmt(100 * (s["train_peak_fraction"] or 0), ".1f"),
            fmt(s["eval_users_per_s"], ".0f"), fmt(r.get("eval_users_per_s")),
            fmt(100 * (s["eval_peak_fraction"] or 0), ".1f"),
            fmt(s["memory_mb"], ".0f"), fmt(r.get("memory")),
            fmt(s["ndcg@10"][-1] if s["ndcg@10"] else None, ".4f"), fmt(s["best_ndcg@10"], ".4f"),
            *ttl,
        ]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
