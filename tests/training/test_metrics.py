"""Tests for full-ranking evaluation metrics (recsys_cli.training.metrics)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_cli.errors import ConfigError, RecsysError
from recsys_cli.training.metrics import (
    RankingMetrics,
    mask_seen,
    sync_distributed,
    target_ranks,
)
from recsys_cli.training.ranking import _ranks, _top_k_mask, capped_ranks, top_k, top_k_covered

NEG_INF = float("-inf")

# 3 users, 5 items. Column 0 is the padding item and gets the highest raw score on purpose:
# it must never count, neither in ranks nor in coverage.
SCORES = torch.tensor(
    [
        # pad   1     2     3     4     5
        [100.0, 0.1, 0.9, 0.5, 0.3, 0.7],  # order 2,5,3,4,1
        [100.0, 0.5, 0.5, 0.5, 0.1, 0.2],  # order 1,2,3 (tie -> index),5,4
        [100.0, 0.2, 0.1, 0.4, 0.3, 0.8],  # order 5,3,4,1,2
    ]
)
TARGETS = torch.tensor([3, 2, 2])
# target ranks: user 0 -> 2 (after 2 and 5); user 1 -> 1 (tied with item 1, which has a smaller
# index; the tied item 3 has a larger index and does not count); user 2 -> 4 (last).
RANKS = [2, 1, 4]


def brute_force_rank(row: list[float], target: int) -> int:
    """Rank of ``target`` among items 1..N by (score desc, index asc); -inf target -> N."""
    n = len(row) - 1
    if not row[target] > NEG_INF:
        return n
    order = sorted(range(1, n + 1), key=lambda i: (-row[i], i))
    return order.index(target)


def brute_force_top_k(row: list[float], k: int) -> set[int]:
    n = len(row) - 1
    order = sorted(range(1, n + 1), key=lambda i: (-row[i], i))
    return {i for i in order[:k] if row[i] > NEG_INF}


def assert_metrics_equal(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-15), key


def assert_states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].dtype == torch.float64:
            torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-15)
        else:
            assert torch.equal(a[key], b[key]), key


# -- target_ranks ----------------------------------------------------------------------------


def test_target_ranks_hand_computed():
    assert target_ranks(SCORES, TARGETS).tolist() == RANKS


def test_target_ranks_ignores_padding_column_and_returns_long():
    scores = SCORES.clone()
    scores[:, 0] = -5.0  # whatever column 0 holds, the ranks are the same
    ranks = target_ranks(scores, TARGETS)
    assert ranks.dtype == torch.long
    assert ranks.tolist() == RANKS


def test_target_ranks_ties_broken_by_item_index():
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0]])
    for target in range(1, 5):
        assert target_ranks(scores, torch.tensor([target])).tolist() == [target - 1]


def test_target_ranks_minus_inf_target_gets_rank_n():
    scores = torch.tensor([[0.0, NEG_INF, NEG_INF, 0.3, 0.2]])
    assert target_ranks(scores, torch.tensor([1])).tolist() == [4]
    assert target_ranks(scores, torch.tensor([2])).tolist() == [4]
    # -inf items are below every finite one
    assert target_ranks(scores, torch.tensor([4])).tolist() == [1]


def test_target_ranks_rejects_padding_target():
    with pytest.raises(ValueError, match="targets"):
        target_ranks(SCORES, torch.tensor([0, 1, 2]))


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    batch=st.integers(1, 6),
    num_items=st.integers(1, 12),
)
def test_target_ranks_matches_brute_force_sort(data, batch, num_items):
    # Few distinct values so that ties and -inf are frequent.
    value = st.sampled_from([NEG_INF, -1.0, 0.0, 0.5, 1.0, 2.0, 1e30])
    rows = [
        data.draw(st.lists(value, min_size=num_items + 1, max_size=num_items + 1))
        for _ in range(batch)
    ]
    targets = data.draw(st.lists(st.integers(1, num_items), min_size=batch, max_size=batch))
    scores = torch.tensor(rows, dtype=torch.float64)
    got = target_ranks(scores, torch.tensor(targets)).tolist()
    expected = [brute_force_rank(row, t) for row, t in zip(rows, targets, strict=True)]
    assert got == expected


@settings(max_examples=100, deadline=None)
@given(data=st.data(), batch=st.integers(1, 5), num_items=st.integers(1, 10))
def test_coverage_is_exactly_the_items_ranked_below_k(data, batch, num_items):
    # coverage marks item i for K iff some case ranks it < K (same tie rule as target_ranks).
    value = st.sampled_from([NEG_INF, 0.0, 0.5, 1.0, 3.0])
    rows = [
        data.draw(st.lists(value, min_size=num_items + 1, max_size=num_items + 1))
        for _ in range(batch)
    ]
    ks = sorted(set(data.draw(st.lists(st.integers(1, num_items), min_size=1, max_size=3))))
    metrics = RankingMetrics(ks, num_items)
    metrics.update(torch.tensor(rows), torch.ones(batch, dtype=torch.long))
    covered = metrics.state()["covered"]
    for i, k in enumerate(ks):
        expected = set().union(*(brute_force_top_k(row, k) for row in rows))
        got = {j + 1 for j in torch.nonzero(covered[i]).flatten().tolist()}
        assert got == expected, (k, rows)


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    batch=st.integers(1, 6),
    num_items=st.integers(1, 30),
    cap=st.integers(1, 30),
)
def test_ranks_and_top_k_from_the_best_scores_equal_the_whole_row_rule(data, batch, num_items, cap):
    """The evaluation reads each row's best ``max(K) + 1`` scores, not the whole row: the capped
    ranks and the top-K sets are the whole-row rule's (score desc, index asc; -inf never; NaN never
    above), whether the scores are distinct, tied across the K-th place, -inf or NaN."""
    cap = min(cap, num_items)
    distinct = st.floats(-5, 5, allow_nan=False)
    value = st.one_of(distinct, st.sampled_from([NEG_INF, 0.5, 1.0, math.nan]))
    rows = [data.draw(st.lists(value, min_size=num_items, max_size=num_items)) for _ in range(batch)]
    items = torch.tensor(rows, dtype=torch.float32)
    targets0 = torch.tensor(data.draw(st.lists(st.integers(0, num_items - 1), min_size=batch, max_size=batch)))
    ks = sorted({*data.draw(st.lists(st.integers(1, cap), max_size=2)), cap})
    values, indices = top_k(items, ks)
    want = _ranks(items, targets0).clamp(max=cap)
    assert capped_ranks(items, targets0, values, cap).tolist() == want.tolist()
    covered = top_k_covered(items, ks, values, indices)
    for i, k in enumerate(ks):
        cleaned = items.masked_fill(items.isnan(), NEG_INF)  # NaN: never recommended
        kth = cleaned.sort(dim=1, descending=True).values[:, k - 1 : k]
        whole_row = _top_k_mask(cleaned, kth, k).any(dim=0)
        assert covered[i].tolist() == whole_row.tolist(), (k, rows)


# -- mask_seen -------------------------------------------------------------------------------


def test_mask_seen_sets_seen_and_padding_to_minus_inf_in_place():
    scores = SCORES.clone()
    seen = torch.tensor([[2, 0], [0, 0], [5, 1]])
    out = mask_seen(scores, seen)
    assert out.data_ptr() == scores.data_ptr()
    expected = SCORES.clone()
    expected[:, 0] = NEG_INF
    expected[0, 2] = NEG_INF
    expected[2, 5] = NEG_INF
    expected[2, 1] = NEG_INF
    assert torch.equal(out, expected)


def test_mask_seen_with_no_seen_columns_still_masks_padding():
    out = mask_seen(SCORES.clone(), torch.zeros(3, 0, dtype=torch.long))
    assert torch.isneginf(out[:, 0]).all()
    assert torch.equal(out[:, 1:], SCORES[:, 1:])


def test_mask_seen_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="seen"):
        mask_seen(SCORES.clone(), torch.tensor([[6], [0], [0]]))


# -- RankingMetrics: hand-computed values ----------------------------------------------------


def test_hand_computed_metrics():
    metrics = RankingMetrics([1, 3, 5], num_items=5)
    metrics.update(SCORES, TARGETS)
    assert metrics.count == 3
    m = metrics.compute()
    expected = {
        # ranks 2, 1, 4
        "hr@1": 0.0,
        "hr@3": 2 / 3,
        "hr@5": 3 / 3,
        "ndcg@1": 0.0,
        "ndcg@3": (1 / math.log2(4) + 1 / math.log2(3)) / 3,
        "ndcg@5": (1 / math.log2(4) + 1 / math.log2(3) + 1 / math.log2(6)) / 3,
        "mrr@1": 0.0,
        "mrr@3": (1 / 3 + 1 / 2) / 3,
        "mrr@5": (1 / 3 + 1 / 2 + 1 / 5) / 3,
        "recall@1": 0.0,
        "recall@3": 2 / 3,
        "recall@5": 3 / 3,
        # top-1: user 0 -> 2, user 1 -> 1 (three-way tie won by the smallest index), user 2 -> 5
        "coverage@1": 3 / 5,
        "coverage@3": 5 / 5,
        "coverage@5": 5 / 5,
    }
    assert_metrics_equal(m, expected)
    covered = metrics.state()["covered"]
    assert covered[0].tolist() == [True, True, False, False, True]  # items 1, 2, 5


def test_hit_at_rank_zero():
    metrics = RankingMetrics([1], num_items=5)
    metrics.update(SCORES[:1], torch.tensor([2]))  # item 2 is user 0's top item
    m = metrics.compute()
    assert m["hr@1"] == 1.0
    assert m["ndcg@1"] == 1.0  # 1 / log2(0 + 2)
    assert m["mrr@1"] == 1.0
    assert m["coverage@1"] == 1 / 5


def test_update_does_not_modify_scores():
    scores = SCORES.clone()
    metrics = RankingMetrics([3], num_items=5)
    metrics.update(scores, TARGETS, seen=torch.tensor([[2], [1], [5]]))
    assert torch.equal(scores, SCORES)


def test_seen_filtering():
    metrics = RankingMetrics([1, 3, 5], num_items=5)
    # user 0: its top item 2 is seen -> target 3 moves from rank 2 to rank 1.
    # user 1: target 2 itself is seen -> never a hit, even at K = 5 = N.
    # user 2: nothing seen (padding only) -> rank 4.
    seen = torch.tensor([[2, 0], [2, 0], [0, 0]])
    metrics.update(SCORES, TARGETS, seen=seen)
    m = metrics.compute()
    assert m["hr@1"] == 0.0
    assert m["hr@3"] == pytest.approx(1 / 3)
    assert m["hr@5"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / 3)
    assert m["mrr@5"] == pytest.approx((1 / 2 + 1 / 5) / 3)
    covered = metrics.state()["covered"]
    # top-1 after filtering: user 0 -> 5, user 1 -> 1, user 2 -> 5: item 2 no longer recommended
    assert covered[0].tolist() == [True, False, False, False, True]
    # top-5 of user 0 and 1 exclude item 2; user 2 still recommends it -> full coverage@5
    assert m["coverage@5"] == 1.0
    assert m["coverage@1"] == pytest.approx(2 / 5)


def test_minus_inf_items_never_count_for_coverage():
    scores = torch.full((2, 6), NEG_INF)
    scores[0, 1] = 1.0
    scores[1, 3] = 0.0
    metrics = RankingMetrics([5], num_items=5)
    metrics.update(scores, torch.tensor([1, 2]))
    m = metrics.compute()
    assert m["coverage@5"] == pytest.approx(2 / 5)
    assert m["hr@5"] == pytest.approx(1 / 2)  # user 1's target is -inf: rank N, no hit


def test_empty_accumulator():
    metrics = RankingMetrics([2], num_items=4)
    assert metrics.count == 0
    m = metrics.compute()
    assert math.isnan(m["hr@2"])
    assert m["coverage@2"] == 0.0


def test_keys_for_every_k_and_duplicate_ks():
    metrics = RankingMetrics([10, 1, 10], num_items=20)
    assert metrics.ks == (1, 10)
    metrics.update(torch.randn(4, 21), torch.tensor([1, 2, 3, 4]))
    assert set(metrics.compute()) == {
        f"{name}@{k}" for name in ("hr", "ndcg", "mrr", "recall", "coverage") for k in (1, 10)
    }


def test_reset():
    metrics = RankingMetrics([3], num_items=5)
    metrics.update(SCORES, TARGETS)
    metrics.reset()
    assert metrics.count == 0
    assert not metrics.state()["covered"].any()
    metrics.update(SCORES[:1], TARGETS[:1])
    assert metrics.compute()["hr@3"] == 1.0


# -- batching, merging, state ----------------------------------------------------------------


def random_cases(seed: int, cases: int = 37, num_items: int = 50):
    g = torch.Generator().manual_seed(seed)
    # rounded scores -> many ties; some -inf
    scores = torch.round(torch.randn(cases, num_items + 1, generator=g) * 2) / 2
    scores[torch.rand(cases, num_items + 1, generator=g) < 0.05] = NEG_INF
    targets = torch.randint(1, num_items + 1, (cases,), generator=g)
    seen = torch.randint(0, num_items + 1, (cases, 7), generator=g)
    return scores, targets, seen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_split_invariance(seed):
    scores, targets, seen = random_cases(seed)
    ks = [1, 5, 10, 50]
    whole = RankingMetrics(ks, num_items=50)
    whole.update(scores, targets, seen)
    split = RankingMetrics(ks, num_items=50)
    for start, stop in [(0, 1), (1, 13), (13, 13), (13, 37)]:
        split.update(scores[start:stop], targets[start:stop], seen[start:stop])
    assert split.count == whole.count == 37
    assert_states_equal(split.state(), whole.state())
    assert_metrics_equal(split.compute(), whole.compute())
    # the case-by-case brute force agrees too
    masked = mask_seen(scores.clone(), seen)
    ranks = [
        brute_force_rank(row, t) for row, t in zip(masked.tolist(), targets.tolist(), strict=True)
    ]
    for k in ks:
        assert whole.compute()[f"hr@{k}"] == pytest.approx(sum(r < k for r in ranks) / 37)
        assert whole.compute()[f"ndcg@{k}"] == pytest.approx(
            sum(1 / math.log2(r + 2) for r in ranks if r < k) / 37
        )


def test_merge_equals_single_accumulator():
    scores, targets, seen = random_cases(3)
    ks = [1, 10, 20]
    single = RankingMetrics(ks, num_items=50)
    single.update(scores, targets, seen)
    a, b = RankingMetrics(ks, num_items=50), RankingMetrics(ks, num_items=50)
    a.update(scores[:20], targets[:20], seen[:20])
    b.update(scores[20:], targets[20:], seen[20:])
    assert a.compute() != single.compute()
    a.merge(b)
    assert a.count == 37
    assert_states_equal(a.state(), single.state())
    assert_metrics_equal(a.compute(), single.compute())
    # merging into an empty accumulator copies, merging an empty one is a no-op
    empty = RankingMetrics(ks, num_items=50)
    empty.merge(single)
    empty.merge(RankingMetrics(ks, num_items=50))
    assert_states_equal(empty.state(), single.state())


def test_merge_rejects_different_configuration():
    with pytest.raises(ValueError):
        RankingMetrics([1], num_items=5).merge(RankingMetrics([2], num_items=5))


def test_state_round_trip_and_coverage_or():
    scores, targets, seen = random_cases(4)
    full = RankingMetrics([5], num_items=50)
    full.update(scores, targets, seen)
    a, b = RankingMetrics([5], num_items=50), RankingMetrics([5], num_items=50)
    a.update(scores[:10], targets[:10], seen[:10])
    b.update(scores[10:], targets[10:], seen[10:])
    sa, sb = a.state(), b.state()
    combined = {k: (sa[k] | sb[k]) if k == "covered" else sa[k] + sb[k] for k in sa}
    restored = RankingMetrics([5], num_items=50)
    restored.load_state(combined)
    assert_states_equal(restored.state(), full.state())
    # state() returns copies
    sa["count"] += 100
    assert a.count == 10
    with pytest.raises(ValueError):
        restored.load_state({**combined, "covered": torch.zeros(1, 49, dtype=torch.bool)})


def test_sync_distributed_is_noop_without_process_group():
    metrics = RankingMetrics([3], num_items=5)
    metrics.update(SCORES, TARGETS)
    before = metrics.state()
    sync_distributed(metrics)
    assert_states_equal(metrics.state(), before)


def _ddp_worker(rank: int, world_size: int, init_file: str, result_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        scores, targets, seen = random_cases(5)
        metrics = RankingMetrics([1, 10], num_items=50)
        # disjoint cases: rank r takes cases r, r + world_size, ...; the last rank evaluates
        # no case at all and must still take part in the collective.
        if rank != world_size - 1:
            idx = torch.arange(rank, 37, world_size)
            metrics.update(scores[idx], targets[idx], seen[idx])
        sync_distributed(metrics)
        if rank == 0:
            torch.save(metrics.state(), result_file)
    finally:
        dist.destroy_process_group()


def test_sync_distributed_equals_single_process(tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    world_size = 3
    result_file = str(tmp_path / "state.pt")
    mp.spawn(
        _ddp_worker,
        args=(world_size, str(tmp_path / "init"), result_file),
        nprocs=world_size,
        join=True,
    )
    scores, targets, seen = random_cases(5)
    used = torch.cat([torch.arange(r, 37, world_size) for r in range(world_size - 1)])
    single = RankingMetrics([1, 10], num_items=50)
    single.update(scores[used], targets[used], seen[used])
    synced = RankingMetrics([1, 10], num_items=50)
    synced.load_state(torch.load(result_file, weights_only=True))
    assert synced.count == single.count == len(used)
    assert_states_equal(synced.state(), single.state())


# -- devices ---------------------------------------------------------------------------------


def test_state_on_given_device_and_first_update_device():
    metrics = RankingMetrics([3], num_items=5, device="cpu")
    assert metrics.device == torch.device("cpu")
    lazy = RankingMetrics([3], num_items=5)
    assert lazy.device is None
    lazy.update(SCORES, TARGETS)
    assert lazy.device == SCORES.device
    assert all(t.device == SCORES.device for t in lazy.state().values())
    assert lazy.state()["hr"].dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    scores, targets, seen = random_cases(6)
    cpu = RankingMetrics([1, 5, 10], num_items=50)
    cpu.update(scores, targets, seen)
    gpu = RankingMetrics([1, 5, 10], num_items=50)
    gpu.update(scores.cuda(), targets.cuda(), seen.cuda())
    assert gpu.state()["hr"].device.type == "cuda"
    assert_metrics_equal(gpu.compute(), cpu.compute())
    # state kept on CPU while scores are on the GPU
    mixed = RankingMetrics([1, 5, 10], num_items=50, device="cpu")
    mixed.update(scores.cuda(), targets.cuda(), seen.cuda())
    assert_states_equal(mixed.state(), cpu.state())


# -- validation ------------------------------------------------------------------------------


def test_k_larger_than_catalogue_raises_config_error():
    with pytest.raises(ConfigError) as info:
        RankingMetrics([10, 5000], num_items=1682)
    message = str(info.value)
    assert message == (
        "metrics.ks: K=5000 is larger than the catalogue (1682 items); use K <= 1682"
    )
    assert "\n" not in message
    assert isinstance(info.value, RecsysError)


@pytest.mark.parametrize("ks", [[0], [-1, 5], [11], [5, 11], [], [True], [2.5], "10", 10])
def test_bad_ks_raise_config_error(ks):
    with pytest.raises(ConfigError, match=r"^metrics\.ks: "):
        RankingMetrics(ks, num_items=10)


def test_k_equal_to_catalogue_is_allowed():
    metrics = RankingMetrics([5], num_items=5)
    metrics.update(SCORES, TARGETS)
    assert metrics.compute()["hr@5"] == 1.0


def test_update_rejects_wrong_shapes():
    metrics = RankingMetrics([3], num_items=5)
    with pytest.raises(ValueError, match="num_items"):
        metrics.update(SCORES[:, :5], TARGETS)
    with pytest.raises(ValueError, match="targets"):
        metrics.update(SCORES, TARGETS[:2])
    with pytest.raises(ValueError, match="targets"):
        metrics.update(SCORES, torch.tensor([1, 2, 6]))
