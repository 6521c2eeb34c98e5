"""Mean and spread over seeds of a sweep's metrics, as a Markdown table.

    python scripts/aggregate_sweep.py SWEEP_DIR [--by model/item data.cold_items] [--metrics test/ndcg@10 ...]

Reads ``SWEEP_DIR/summary.csv`` (written by every ``recsys train -m`` sweep): rows that agree on the
``--by`` columns (default: every swept column but ``seed``) are one line of the table, with the
mean ± sample standard deviation of each metric over them and the number of runs. A metric absent
from a run (e.g. a bucket without cases) is left out of that run's mean.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from pathlib import Path

DEFAULT_METRICS = ["test/ndcg@10", "test/hr@10", "s/epoch"]


def aggregate(rows: list[dict[str, str]], by: list[str], metrics: list[str]) -> list[dict[str, str]]:
    groups: dict[tuple, list[dict[str, str]]] = {}
    for row in rows:
        if row.get("status", "ok") != "ok":
            continue
        groups.setdefault(tuple(row.get(key, "") for key in by), []).append(row)
    table = []
    for key, members in groups.items():
        line = dict(zip(by, key, strict=True))
        line["runs"] = str(len(members))
        for metric in metrics:
            values = [float(r[metric]) for r in members if r.get(metric) not in (None, "")]
            values = [v for v in values if not math.isnan(v)]
            if not values:
                line[metric] = "-"
            elif len(values) == 1:
                line[metric] = f"{values[0]:.4f}"
            else:
                line[metric] = f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
        table.append(line)
    return table


def markdown(table: list[dict[str, str]]) -> str:
    if not table:
        return "(no finished runs)"
    columns = list(table[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(line[c] for c in columns) + " |" for line in table]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path)
    parser.add_argument("--by", nargs="*", default=None, help="columns that define a line (default: swept ones but seed)")
    parser.add_argument("--metrics", nargs="+", default=DEFAULT_METRICS)
    args = parser.parse_args()
    rows: list[dict[str, str]] = []
    for sweep in args.sweep_dirs:
        with open(sweep / "summary.csv", newline="") as f:
            rows += list(csv.DictReader(f))
    if args.by is None:
        fixed = {"job", "status", "overrides", "error", "s/epoch", "seed"}
        args.by = [c for c in rows[0] if c not in fixed and not c.startswith(("val/", "test/"))] if rows else []
    print(markdown(aggregate(rows, args.by, args.metrics)))


if __name__ == "__main__":
    main()
