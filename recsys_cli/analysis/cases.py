"""Per-case test results: the file every evaluation writes, and every metric recomputed from it.

One row per test case (Parquet, written atomically): ``user`` (index) and ``user_id`` (raw id),
``item`` (the target's index) and ``item_id`` (its raw id), ``rank`` (the target's 0-based place
in the whole seen-filtered ranking of the catalogue, ties broken by item index; ``num_items`` when
the target cannot be recommended, e.g. a seen item) and, when the run has buckets, ``bucket``
(``cold``/``rare``/``head``: the target's training count). Rows follow the split's test cases (by user for leave-one-out). The
file's metadata (key ``recsys``) holds ``stage``, ``num_items`` and ``ks``.

A case's metrics at cut-off K follow from its rank ``r`` alone: ``hr = recall = [r < K]``,
``ndcg = [r < K] / log2(r + 2)``, ``mrr = [r < K] / (r + 1)`` (:func:`case_metric`); their means
are the run's metrics (``metrics.json``'s ``test``), to float precision.

Where the files are: ``<run>/test_cases.parquet`` (``recsys train``) and
``<run>/evaluations/<time>-test_cases.parquet`` (``recsys evaluate``, next to its JSON report).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars

from recsys_cli.errors import RecsysError
from recsys_cli.io import atomic_write

CASES_FILE = "test_cases.parquet"  # in a run folder, written by recsys train
EVALUATION_SUFFIX = "-test_cases.parquet"  # <run>/evaluations/<time>-test_cases.parquet
CASE_METRICS = ("ndcg", "hr", "mrr", "recall")  # per case; coverage is a property of all cases


def write_cases_file(path: Path, frame: polars.DataFrame, meta: dict[str, Any]) -> Path:
    """Write ``frame`` (the columns of this module's docstring) with ``meta`` atomically."""
    metadata = {"recsys": json.dumps(meta)}
    atomic_write(path, lambda tmp: frame.write_parquet(tmp, metadata=metadata))
    return path


def read_cases(path: Path) -> tuple[polars.DataFrame, dict[str, Any]]:
    """The per-case frame and its metadata (``stage``, ``num_items``, ``ks``); one-line errors."""
    path = Path(path)
    try:
        frame = polars.read_parquet(path)
        meta = json.loads(polars.read_parquet_metadata(path).get("recsys", "{}"))
    except (OSError, polars.exceptions.PolarsError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RecsysError(f"{path}: not a readable per-case file ({first})") from None
    missing = [c for c in ("user", "item", "rank") if c not in frame.columns]
    if missing or "num_items" not in meta:
        raise RecsysError(f"{path}: not a recsys per-case file (no {', '.join(missing) or 'metadata'})")
    return frame, meta


def case_metric(ranks: np.ndarray, name: str, k: int) -> np.ndarray:
    """Per-case ``name`` (``ndcg``, ``hr``, ``recall``, ``mrr``) at cut-off ``k`` from 0-based ranks
    ([cases] -> [cases] float64)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks < k
    if name in ("hr", "recall"):
        return hit.astype(np.float64)
    if name == "ndcg":
        return np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    if name == "mrr":
        return np.where(hit, 1.0 / (ranks + 1.0), 0.0)
    raise RecsysError(f"metric {name!r} has no per-case value; use one of {', '.join(CASE_METRICS)}")


def parse_metric(metric: str) -> tuple[str, int]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; one-line error for anything else."""
    name, _, k = str(metric).partition("@")
    if name not in CASE_METRICS or not k.isdigit() or int(k) < 1:
        raise RecsysError(f"metric {metric!r}: write <name>@K with name one of {', '.join(CASE_METRICS)}, e.g. ndcg@10")
    return name, int(k)


def mean_metrics(frame: polars.DataFrame, ks: list[int]) -> dict[str, float]:
    """``{"ndcg@K", "hr@K", "mrr@K", "recall@K"}`` averaged over the cases of ``frame``, and per
    bucket (``cold/ndcg@10``..., ``cold/cases``) when it has a ``bucket`` column: the keys of
    ``metrics.json`` (coverage aside)."""
    ranks = frame["rank"].to_numpy()
    result: dict[str, float] = {}
    for name in CASE_METRICS:
        for k in ks:
            result[f"{name}@{k}"] = float(case_metric(ranks, name, k).mean()) if len(ranks) else float("nan")
    if "bucket" in frame.columns:
        buckets = frame["bucket"].to_numpy()
        for bucket in dict.fromkeys(buckets.tolist()):
            member = buckets == bucket
            result[f"{bucket}/cases"] = int(member.sum())
            for name in CASE_METRICS:
                for k in ks:
                    result[f"{bucket}/{name}@{k}"] = float(case_metric(ranks[member], name, k).mean())
    return result


def find_cases(run: Path) -> Path | None:
    """The per-case file of a run folder: ``test_cases.parquet`` of training, else the newest one
    of ``evaluations/`` (their names sort by time); a file given directly is itself."""
    run = Path(run)
    if run.is_file():
        return run
    if (run / CASES_FILE).is_file():
        return run / CASES_FILE
    evaluated = sorted((run / "evaluations").glob(f"*{EVALUATION_SUFFIX}"))
    return evaluated[-1] if evaluated else None
