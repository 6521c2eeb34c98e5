"""Per-case ranks kept by RankingMetrics (``keep_cases``): exact full-ranking ranks, the same
metrics as without them, and gathered in case order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_cli.training.metrics import RankingMetrics, gather_cases, target_ranks


def batches(seed: int, n_batches: int = 4, batch: int = 7, num_items: int = 40):
    g = torch.Generator().manual_seed(seed)
    case = 0
    for _ in range(n_batches):
        scores = torch.randn(batch, num_items + 1, generator=g).round(decimals=1)  # ties on purpose
        targets = torch.randint(1, num_items + 1, (batch,), generator=g)
        seen = torch.randint(0, num_items + 1, (batch, 5), generator=g)
        yield scores, targets, seen, torch.arange(case, case + batch)
        case += batch


def test_kept_ranks_are_the_exact_full_ranks_and_leave_the_metrics_unchanged():
    kept, plain = RankingMetrics([1, 5], 40), RankingMetrics([1, 5], 40)
    kept.keep_cases = True
    expected = []
    for scores, targets, seen, cases in batches(0):
        kept.update(scores, targets, seen, cases=cases)
        plain.update(scores, targets, seen)
        masked = scores.clone()
        masked.scatter_(1, seen, float("-inf"))
        masked[:, 0] = float("-inf")
        expected.append(target_ranks(masked, targets))
    got = kept.cases()
    assert np.array_equal(got["rank"], torch.cat(expected).numpy())
    assert got["rank"].max() > 5  # beyond the largest K, not capped
    assert (got["rank"] == 40).any()  # a seen target: never recommended, rank N
    assert kept.compute() == plain.compute()
    ndcg5 = np.where(got["rank"] < 5, 1 / np.log2(got["rank"] + 2.0), 0.0).mean()
    assert kept.compute()["ndcg@5"] == pytest.approx(ndcg5, rel=1e-12)


def test_gather_sorts_by_case_and_reset_forgets():
    metrics = RankingMetrics([3], 40, item_train_counts=np.arange(41) % 7)
    metrics.keep_cases = True
    parts = list(batches(1, n_batches=3))
    for scores, targets, seen, cases in reversed(parts):  # evaluated out of order
        metrics.update(scores, targets, seen, cases=cases)
    gathered = gather_cases(metrics)
    assert gathered["case"].tolist() == list(range(21))
    assert gathered["item"].tolist() == torch.cat([t for _, t, _, _ in parts]).tolist()
    assert set(gathered["bucket"].tolist()) <= {0, 1, 2}
    metrics.reset()
    assert len(metrics.cases()["rank"]) == 0


def test_keeping_cases_needs_the_case_indices():
    metrics = RankingMetrics([3], 40)
    metrics.keep_cases = True
    scores, targets, seen, _ = next(batches(2))
    with pytest.raises(ValueError, match="cases"):
        metrics.update(scores, targets, seen)
