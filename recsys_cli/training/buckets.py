"""Ranking metrics by bucket of the target item's number of training events.

A case falls in the bucket of its *target* item's training count (``DataSpec.item_train_counts``):
``cold`` (0: the item never occurs in training), ``rare`` (1-4) and ``head`` (5+). Each bucket
keeps the case count and the HR, NDCG and MRR sums of its cases (Recall@K equals HR@K with one
target per case); coverage is a property of the catalogue, not of a bucket's cases, and has no
bucket values. :class:`~recsys_cli.training.metrics.RankingMetrics` holds these sums in its state,
so :func:`~recsys_cli.training.metrics.sync_distributed` all-reduces them like the overall ones.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# (name, lowest count): each bucket reaches up to the next one's lowest count - 1, the last one
# has no upper bound
FREQUENCY_BUCKETS = (("cold", 0), ("rare", 1), ("head", 5))
BUCKET_METRICS = ("hr", "ndcg", "mrr", "recall")  # reported per bucket (no coverage)
BUCKET_SUMS = ("hr", "ndcg", "mrr")  # accumulated per bucket (recall = hr)


def frequency_buckets(item_train_counts: np.ndarray | Tensor, num_items: int) -> Tensor:
    """``[N + 1]`` long: the index in :data:`FREQUENCY_BUCKETS` of every item's training count."""
    counts = torch.as_tensor(np.asarray(item_train_counts), dtype=torch.long)
    if counts.shape != (num_items + 1,):
        raise ValueError(
            f"item_train_counts must have shape [num_items + 1] = [{num_items + 1}], got {tuple(counts.shape)}"
        )
    lows = torch.tensor([low for _, low in FREQUENCY_BUCKETS], dtype=torch.long)
    return torch.searchsorted(lows, counts, right=True).clamp(min=1) - 1


def describe_buckets() -> str:
    """``cold: 0, rare: 1-4, head: 5+ training events of the target item``."""
    parts = []
    for i, (name, low) in enumerate(FREQUENCY_BUCKETS):
        high = FREQUENCY_BUCKETS[i + 1][1] - 1 if i + 1 < len(FREQUENCY_BUCKETS) else None
        span = f"{low}+" if high is None else (str(low) if high == low else f"{low}-{high}")
        parts.append(f"{name}: {span}")
    return ", ".join(parts) + " training events of the target item"


def zero_bucket_state(num_ks: int, device: torch.device) -> dict[str, Tensor]:
    """``bucket_count`` (int64 ``[G]``) and ``bucket_<sum>`` (float64 ``[G, num_ks]``), zero."""
    nb = len(FREQUENCY_BUCKETS)
    state = {"bucket_count": torch.zeros(nb, dtype=torch.int64, device=device)}
    for name in BUCKET_SUMS:
        state[f"bucket_{name}"] = torch.zeros(nb, num_ks, dtype=torch.float64, device=device)
    return state


def add_to_buckets(state: dict[str, Tensor], case_bucket: Tensor, values: dict[str, Tensor]) -> None:
    """Add each case's ``values`` (``[nk, B]`` float64 per name of :data:`BUCKET_SUMS`) to the row
    of its bucket ``case_bucket`` ([B] long). A masked sum, not ``index_add_``: no atomics, so the
    sums are deterministic on every device."""
    device = case_bucket.device
    member = case_bucket.unsqueeze(0) == torch.arange(len(FREQUENCY_BUCKETS), device=device).unsqueeze(1)  # [G, B]
    zero = torch.zeros((), dtype=torch.float64, device=device)
    target_device = state["bucket_count"].device
    state["bucket_count"] += member.sum(dim=1).to(target_device)
    for name in BUCKET_SUMS:
        per_bucket = torch.where(member.unsqueeze(1), values[name].unsqueeze(0), zero).sum(dim=2)  # [G, nk]
        state[f"bucket_{name}"] += per_bucket.to(target_device)


def bucket_results(state: dict[str, Tensor], ks: tuple[int, ...]) -> dict[str, float]:
    """Per bucket: ``<bucket>/cases`` (an int) and ``<bucket>/<metric>@K`` for every metric of
    :data:`BUCKET_METRICS`, averaged over the bucket's cases. An empty bucket has ``cases`` 0 and
    no metric keys at all (no NaN): reports show nothing for it rather than a number."""
    counts = state["bucket_count"].tolist()
    sums = {name: state[f"bucket_{name}"].tolist() for name in BUCKET_SUMS}
    sums["recall"] = sums["hr"]  # one target per case: recall@K == hit@K
    result: dict[str, float] = {}
    for b, (bucket, _) in enumerate(FREQUENCY_BUCKETS):
        result[f"{bucket}/cases"] = int(counts[b])
        if counts[b]:
            for name in BUCKET_METRICS:
                for i, k in enumerate(ks):
                    result[f"{bucket}/{name}@{k}"] = float(sums[name][b][i] / counts[b])
    return result
