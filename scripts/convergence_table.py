"""The convergence table of docs/results/ml1m-sasrec.md from finished runs: the product's run
folders (``metrics.json``, ``logs/metrics.csv`` with ``val/ndcg@10`` and ``time/train_s`` per
epoch) and RePlay's JSON records (``scripts/peers/replay_sasrec.py``), grouped by a label.

    python scripts/convergence_table.py --group "Transformer=runs/ml1m/plain_s1,runs/ml1m/plain_s2" \\
        --group "RePlay SASRec=runs/peers/replay_s1.json,runs/peers/replay_s2.json"

Prints, per group (mean ± sample standard deviation over its runs): test NDCG@10 and HR@10 at the
best validation epoch, the best epoch, the epochs run, the training seconds to the best epoch and
per epoch, the training seconds to validation NDCG@10 0.10 and 0.15; then validation NDCG@10 at
equal epochs and at equal training seconds (the best reached by then; a run that stopped early
keeps its best).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

LEVELS = (0.10, 0.15)
EPOCHS = (1, 3, 5, 10, 20, 30)
SECONDS = (60, 120, 300, 600, 900)


def read_product(run: Path) -> dict:
    report = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    val, clock = {}, {}
    with open(run / "logs" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            epoch = int(row["epoch"])
            if row.get("val/ndcg@10"):
                val[epoch] = float(row["val/ndcg@10"])
            if row.get("time/train_s"):
                clock[epoch] = float(row["time/train_s"])
    epochs = sorted(val)
    curve = [(e, clock[e], val[e]) for e in epochs if e in clock]
    best = max(curve, key=lambda c: c[2])[0]
    return {"test": report.get("test"), "curve": curve, "best": best}


def read_replay(path: Path) -> dict:
    record = json.loads(path.read_text())
    curve = [(e["epoch"], e["train_seconds_total"], e["val/ndcg@10"]) for e in record["epochs"]]
    best = record.get("best_epoch")  # absent while the run goes on
    return {"test": record.get("test"), "curve": curve, "best": best if best is not None else max(curve, key=lambda c: c[2])[0]}


def read(path: str) -> dict:
    p = Path(path)
    return read_replay(p) if p.suffix == ".json" else read_product(p)


def spread(values: list[float], digits: int = 4) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def first_at(curve: list[tuple[int, float, float]], level: float) -> float | None:
    return next((s for _, s, v in curve if v >= level), None)


def summary(runs: list[dict]) -> dict:
    row = {
        "test NDCG@10": spread([r["test"]["ndcg@10"] for r in runs if r["test"]]),
        "test HR@10": spread([r["test"]["hr@10"] for r in runs if r["test"]]),
        "best epoch": spread([r["best"] + 1 for r in runs], 1),
        "epochs run": spread([len(r["curve"]) for r in runs], 1),
        "s to best": spread([dict((e, s) for e, s, _ in r["curve"])[r["best"]] for r in runs], 0),
        "s/epoch": spread([r["curve"][-1][1] / len(r["curve"]) for r in runs], 1),
    }
    for level in LEVELS:
        times = [first_at(r["curve"], level) for r in runs]
        reached = [t for t in times if t is not None]
        row[f"s to {level:.2f}"] = spread(reached, 0) + ("" if len(reached) == len(runs) else f" ({len(reached)}/{len(runs)})")
    return row


def at_epochs(runs: list[dict]) -> list[str]:
    out = []
    for epoch in EPOCHS:
        values = [r["curve"][epoch - 1][2] for r in runs if len(r["curve"]) >= epoch]
        out.append(spread(values) if len(values) == len(runs) else "-")
    return out


def at_seconds(runs: list[dict]) -> list[str]:
    out = []
    for seconds in SECONDS:
        values = [max((v for _, s, v in r["curve"] if s <= seconds), default=0.0) for r in runs]
        done = all(r["test"] is not None or r["curve"][-1][1] >= seconds for r in runs)  # finished, or that far
        out.append(spread(values) if done else "-")
    return out


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", action="append", required=True, help="LABEL=run,run,... (folders or RePlay JSON)")
    args = parser.parse_args()
    groups = []
    for spec in args.group:
        label, _, paths = spec.partition("=")
        groups.append((label, [read(p) for p in paths.split(",") if p]))
    rows = [[label, str(len(runs)), *summary(runs).values()] for label, runs in groups]
    print(table(["model", "seeds", *summary(groups[0][1]).keys()], rows))
    print()
    print("Validation NDCG@10 at equal epochs:\n")
    print(table(["model", *(f"epoch {e}" for e in EPOCHS)], [[label, *at_epochs(runs)] for label, runs in groups]))
    print()
    print("Validation NDCG@10 at equal training seconds (the best reached by then):\n")
    print(table(["model", *(f"{s} s" for s in SECONDS)], [[label, *at_seconds(runs)] for label, runs in groups]))


if __name__ == "__main__":
    main()
