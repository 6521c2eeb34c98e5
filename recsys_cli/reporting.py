"""What a run writes and prints: the vocabularies, the metrics table, ``metrics.json``, the
per-case test results (:mod:`recsys_cli.analysis.cases`) and the pictures
(:mod:`recsys_cli.analysis.plots`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import polars

from recsys_cli.analysis.cases import write_cases_file
from recsys_cli.analysis.plots import draw_quietly, draw_run
from recsys_cli.data.prepared_data import PreparedData
from recsys_cli.errors import RecsysError
from recsys_cli.io import atomic_write, write_json_atomic
from recsys_cli.training.buckets import FREQUENCY_BUCKETS, describe_buckets

_OBJECTIVE = re.compile(r"^(val|test)/(.+)$")


def save_vocab(run_dir: Path, data: PreparedData) -> None:
    """``vocab/items.parquet`` (index, raw id, title) and ``vocab/users.parquet`` of the run."""
    vocab_dir = run_dir / "vocab"

    def write(name: str, frame: polars.DataFrame) -> None:
        atomic_write(vocab_dir / f"{name}.parquet", lambda tmp: frame.write_parquet(tmp))

    items = {"index": np.arange(1, data.num_items + 1), "item_id": [str(v) for v in data.item_vocab]}
    if data.item_titles is not None:
        items["title"] = data.item_titles
    write("items", polars.DataFrame(items))
    write("users", polars.DataFrame({"index": np.arange(data.num_users), "user_id": [str(v) for v in data.user_vocab]}))


def _cell(value: Any, width: int) -> str:
    """A table cell: an integer (case counts) as it is, a float to 4 decimals, nothing as ``-``."""
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:{width}d}"
    return f"{value:{width}.4f}"


def format_table(results: dict[str, dict[str, float]], width: int = 8) -> str:
    """Metrics as a text table: one row per metric, one column per result set (e.g. val, test).

    The overall metrics come first, then each bucket of the target's training count
    (``cold/cases``, ``cold/hr@10``...; :mod:`recsys_cli.training.buckets`) after a blank line, and
    a line that says what the buckets are. A metric a column lacks (an empty bucket) shows ``-``.
    """
    columns = [c for c in results if results[c]]
    names = list(dict.fromkeys(n for c in columns for n in results[c]))
    if not names:
        return "(no metrics)"
    # the overall metrics (group "") first, then each bucket; stable, so the order within a group stays
    groups = list(dict.fromkeys(n.rpartition("/")[0] for n in names))
    names.sort(key=lambda n: (n.rpartition("/")[0] != "", groups.index(n.rpartition("/")[0])))
    first = max([len(n) for n in names] + [6])
    width = max([width] + [len(c) for c in columns])
    lines = [f"{'metric':<{first}}  " + "  ".join(f"{c:>{width}}" for c in columns)]
    for i, name in enumerate(names):
        if i and name.rpartition("/")[0] != names[i - 1].rpartition("/")[0]:
            lines.append("")
        lines.append(f"{name:<{first}}  " + "  ".join(_cell(results[c].get(name), width) for c in columns))
    if any(group for group in groups):
        lines.append(f"(buckets: {describe_buckets()})")
    return "\n".join(lines)


def held_out_line(held: dict[str, Any]) -> str:
    """What ``data.cold_items`` held out of training (``held``: the data summary's ``cold_items``)."""
    return (
        f"Held out of training (data.cold_items={held['fraction']}): {held['items']:,} items and "
        f"their {held['train_events']:,} training events"
    )


def model_notes(model: Any, summary: dict[str, Any]) -> list[str]:
    """Lines printed above the metrics about what the model was given: the request's time (a leak
    in offline evaluation) and how many evaluation users a user embedding does not know."""
    notes = []
    if model.get("context_request_time"):
        notes.append(
            "model.context_request_time=true: the time of each predicted event is an input (what a "
            "server knows when the user arrives; offline it tells the model when the user came back)"
        )
    unknown = summary.get("unknown_users")
    if model.get("user_embedding") and unknown is not None:
        notes.append(
            f"Users unknown to training (scored with the unknown-user vector): {unknown['val']:,} "
            f"validation and {unknown['test']:,} test cases"
        )
    return notes


def objective(report: dict[str, Any], metric: str) -> float:
    """The value of ``metric`` (``<stage>/<name>``, e.g. ``val/ndcg@10``) in a train report."""
    match = _OBJECTIVE.match(str(metric))
    value = report.get(match.group(1), {}).get(match.group(2)) if match else None
    if value is None:
        raise RecsysError(f"optimized_metric={metric!r} was not computed; use e.g. val/ndcg@10")
    return float(value)


def write_run_report(run_dir: Path, report: dict[str, Any]) -> None:
    """Write ``metrics.json`` (and ``scale_weights.json``), draw the run's pictures (``plots/``)
    and print the run's summary."""
    weights = report["scale_weights"]
    write_json_atomic(run_dir / "metrics.json", report)
    if weights:
        write_json_atomic(run_dir / "scale_weights.json", weights)
    draw_quietly(str(run_dir), lambda: draw_run(run_dir))  # plots/: one warning line at worst
    seen = "filtered from" if report["filter_seen"] else "kept in"
    print(f"\nRun directory: {run_dir}\nSeen items {seen} the ranking (metrics.filter_seen)")
    held = report["data"].get("cold_items")
    if held:
        print(held_out_line(held))
    for note in report.get("notes", []):
        print(note)
    print(format_table({"val": report["val"], "test": report["test"]}))
    if weights:
        last = {k: round(v, 3) for k, v in weights[-1].items() if k != "epoch"}
        print(f"Scale weights (last epoch): {last}")
    if report["best_checkpoint"]:
        print(f"Evaluate again with: recsys evaluate ckpt={report['best_checkpoint']}")


def write_test_cases(path: Path, module: Any, dm: Any) -> Path | None:
    """Write the per-case results of ``module``'s last test (``module.test_cases``: case, item,
    rank and bucket arrays) to ``path`` with each case's user and the raw ids (``dm``: the data
    module the test ran on); None when no test ran."""
    cases = getattr(module, "test_cases", None)
    if cases is None:
        return None
    data = dm.load()
    events = dm.split.test_targets[cases["case"]]  # each case's held-out event
    users, items = data.user_of_event[events].astype(np.int64), cases["item"]
    if not np.array_equal(data.items[events], items):
        raise RecsysError("the per-case results do not match the test cases of the data (a bug: please report it)")
    columns: dict[str, Any] = {
        "user": users,
        "user_id": [str(data.user_vocab[u]) for u in users.tolist()],
        "item": items,
        "item_id": [str(data.item_vocab[i - 1]) for i in items.tolist()],
        "rank": cases["rank"],
    }
    if "bucket" in cases:
        names = np.array([name for name, _ in FREQUENCY_BUCKETS])
        columns["bucket"] = names[cases["bucket"]]
    meta = {"stage": "test", "num_items": int(module.num_items), "ks": [int(k) for k in module.ks]}
    return write_cases_file(Path(path), polars.DataFrame(columns), meta)
