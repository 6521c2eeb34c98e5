"""Per-event window features over the full history against a brute-force loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import window_masks
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_cli.contract.scales import TimeWindowScale, history_len
from recsys_cli.data import window_features as WF
from recsys_cli.data.datamodule import CaseBatches
from recsys_cli.data.prepared_data import PreparedData
from recsys_cli.data.window_features import (
    GAP_SCALE,
    compute_window_features,
    previous_same_value,
)

MINUTE, DAY = 60, 86400
SCALES = [
    TimeWindowScale("session", max_events=3, seconds=30 * MINUTE),
    TimeWindowScale("day", max_events=50, seconds=DAY),
    TimeWindowScale("last2", max_events=50, last=2),
    TimeWindowScale("last4_cap3", max_events=3, last=4),
    TimeWindowScale("all5", max_events=5),
    TimeWindowScale("all", max_events=1000),
]


def make_data(users: list[dict], num_types: int, has_time: bool = True) -> PreparedData:
    """PreparedData from per-user dicts of equal-length lists: times, items, cats, types."""
    lengths = [len(u["items"]) for u in users]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    cat = lambda key: np.array(  # noqa: E731
        [v for u in users for v in u[key]], dtype=np.int64
    ).reshape(-1)
    items, cats, types = cat("items"), cat("cats"), cat("types")
    if has_time:
        times = cat("times")
    else:  # datasets without time: per-user positions
        times = np.concatenate([np.arange(n) for n in lengths]).astype(np.int64)
    return PreparedData(
        offsets=offsets,
        items=items,
        times=times,
        event_types=types,
        categories=cats,
        item_vocab=list(range(1, int(items.max(initial=0)) + 1)),
        user_vocab=list(range(len(users))),
        event_type_vocab=[f"t{k}" for k in range(1, num_types + 1)],
        category_vocab=[f"c{k}" for k in range(1, int(cats.max(initial=0)) + 1)],
        has_time=has_time,
    )


def brute_force(data: PreparedData, scales: list[TimeWindowScale]):
    """Starts [E, S], stats [E, S, F] by the definition, one event and scale at a time, and the
    rounding tolerance [E, S] of the gap spread (feature 4).

    The spread is computed exactly (integer sums); it is ill-conditioned when the squared gaps
    of a window pass 2**62 (gaps of decades): there float64 rounding of the sum (1e-15 relative)
    may move the variance by up to 1e-15 * mean squared gap, hence the tolerance."""
    K = data.num_event_types
    n = data.num_events
    starts = np.zeros((n, len(scales)), dtype=np.int64)
    stats = np.zeros((n, len(scales), 6 + K))
    tol = np.full((n, len(scales)), 1e-6)
    t = [int(x) for x in data.times]
    for u in range(data.num_users):
        lo, hi = int(data.offsets[u]), int(data.offsets[u + 1])
        for e in range(lo, hi):
            for s, sc in enumerate(scales):
                members = [
                    i
                    for i in range(lo, e + 1)
                    if e - i < sc.max_events
                    and (sc.last is None or e - i < sc.last)
                    and (sc.seconds is None or t[e] - t[i] <= sc.seconds)
                ]
                # windows are contiguous runs ending at the anchor
                assert members == list(range(members[0], e + 1))
                starts[e, s] = members[0]
                c = len(members)
                gaps = [t[i] - t[i - 1] for i in members[1:]]
                mean = (t[e] - t[members[0]]) / (c - 1) if c > 1 else 0.0
                sq = sum(g * g for g in gaps)
                # exact: (m * sum g^2 - (sum g)^2) / m^2 with m gaps, in integers
                var = (len(gaps) * sq - sum(gaps) ** 2) / len(gaps) ** 2 if gaps else 0.0
                if sq >= 2**62:
                    tol[e, s] += math.log1p(math.sqrt(1e-15 * sq / len(gaps))) / GAP_SCALE
                since = t[e] - t[e - 1] if e > lo else 0
                row = [
                    math.log1p(c) / math.log1p(sc.max_events),
                    len({int(data.items[i]) for i in members}) / c,
                    len({int(data.categories[i]) for i in members}) / c,
                    math.log1p(mean) / GAP_SCALE,
                    math.log1p(math.sqrt(max(var, 0.0))) / GAP_SCALE,
                    math.log1p(since) / GAP_SCALE,
                ]
                row += [
                    sum(int(data.event_types[i]) == k for i in members) / c for k in range(1, K + 1)
                ]
                stats[e, s] = row
    return starts, stats, tol


GAPS = [0, 0, 1, 30, 600, 1799, 1800, 1801, DAY, DAY + 1, 10**6, 4 * 10**9]


@st.composite
def datasets(draw):
    num_types = draw(st.integers(0, 3))
    n_users = draw(st.integers(1, 5))
    users = []
    for _ in range(n_users):
        n = draw(st.integers(1, 14))
        gaps = draw(st.lists(st.sampled_from(GAPS), min_size=n, max_size=n))
        start = draw(st.integers(10**9, 2 * 10**9))
        users.append(
            {
                "times": list(np.cumsum([start] + gaps[1:])),
                "items": draw(st.lists(st.integers(1, 4), min_size=n, max_size=n)),
                "cats": draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
                "types": draw(st.lists(st.integers(0, num_types), min_size=n, max_size=n)),
            }
        )
    return make_data(users, num_types, has_time=draw(st.booleans()))


@settings(max_examples=100, deadline=None)
@given(data=datasets(), scale_ids=st.lists(st.integers(0, len(SCALES) - 1), min_size=1, max_size=4))
def test_matches_brute_force(data, scale_ids):
    scales = [SCALES[i] for i in scale_ids]
    feats = compute_window_features(data, scales)
    starts, stats, spread_tol = brute_force(data, scales)
    assert feats.stats.dtype == np.float32 and feats.starts.dtype == np.int64
    assert feats.stats.shape == (data.num_events, len(scales), 6 + data.num_event_types)
    np.testing.assert_array_equal(feats.starts, starts)
    others = [f for f in range(stats.shape[-1]) if f != 4]
    np.testing.assert_allclose(feats.stats[..., others], stats[..., others], rtol=1e-6, atol=1e-6)
    spread_error = np.abs(feats.stats[..., 4] - stats[..., 4])
    assert (spread_error <= spread_tol + 1e-6 * np.abs(stats[..., 4])).all()
    assert len(feats.names) == feats.stats.shape[-1]


def test_hand_made_example():
    m = MINUTE
    # user 0: gaps 10 min, 40 min (session break), 0 (equal timestamps), 5 min, 2 days, 10 min
    t0 = 1_700_000_000
    minutes = [0, 10, 50, 50, 55, 55 + 2 * 1440, 55 + 2 * 1440 + 10]
    users = [
        {
            "times": [t0 + m * x for x in minutes],
            "items": [5, 6, 5, 7, 5, 8, 8],
            "cats": [1, 1, 2, 0, 1, 2, 2],
            "types": [1, 1, 2, 1, 3, 1, 1],
        },
        # user 1: starts right after user 0 in time order: windows never cross users
        {"times": [t0 + m * 60], "items": [5], "cats": [1], "types": [2]},
    ]
    data = make_data(users, num_types=3)
    scales = [SCALES[0], SCALES[2], TimeWindowScale("all", max_events=200)]
    f = compute_window_features(data, scales)
    assert f.names[:6] == list(WF.BASE_FEATURES) and f.names[6:] == [
        "type_t1",
        "type_t2",
        "type_t3",
    ]
    # session (30 min, <= 3 events): the 40-minute gap and the 2-day gap end sessions
    assert f.starts[:, 0].tolist() == [0, 0, 2, 2, 2, 5, 5, 7]
    assert f.starts[:, 1].tolist() == [0, 0, 1, 2, 3, 4, 5, 7]
    assert f.starts[:, 2].tolist() == [0, 0, 0, 0, 0, 0, 0, 7]
    assert f.counts[:, 2].tolist() == [1, 2, 3, 4, 5, 6, 7, 1]
    stats = f.stats
    # anchor 4 (items 5, 7, 5 in the session window): 2 distinct of 3; categories 2, 0, 1: 3 of 3
    assert stats[4, 0, 1] == pytest.approx(2 / 3)
    assert stats[4, 0, 2] == pytest.approx(1.0)
    # session window of anchor 4: times 50, 50, 55 min: mean gap 2.5 min, gaps 0 and 5 min -> std 2.5 min
    assert stats[4, 0, 3] == pytest.approx(math.log1p(150) / GAP_SCALE)
    assert stats[4, 0, 4] == pytest.approx(math.log1p(150) / GAP_SCALE)
    assert stats[4, 0, 5] == pytest.approx(math.log1p(300) / GAP_SCALE)
    # event types 2, 1, 3 in that window: one third each
    np.testing.assert_allclose(stats[4, 0, 6:], [1 / 3, 1 / 3, 1 / 3], rtol=1e-6)
    # anchor 6 (session: items 8, 8): equal gaps only -> spread exactly 0
    assert stats[6, 0, 1] == pytest.approx(0.5) and stats[6, 0, 4] == 0.0
    # all-history count feature is normalised by log1p(max_events)
    assert stats[6, 2, 0] == pytest.approx(math.log1p(7) / math.log1p(200))
    # a user's first event: one-event windows, no gaps, time since previous 0
    assert stats[7, :, 0] == pytest.approx(
        [math.log1p(1) / math.log1p(s.max_events) for s in scales]
    )
    assert (stats[7, :, 3:6] == 0).all() and (stats[0, :, 3:6] == 0).all()
    np.testing.assert_allclose(stats[7, :, 6:], [[0, 1, 0]] * 3)


def test_constant_gaps_have_exactly_zero_spread():
    """Exact integer squared-gap sums: no cancellation noise when every gap is equal."""
    n = 500
    times = 1_600_000_000 + 1_234_567 * np.arange(n)
    data = make_data(
        [{"times": times.tolist(), "items": [1] * n, "cats": [0] * n, "types": [0] * n}], 0
    )
    # a long prefix before the window makes float64 prefix sums lose the small window sums
    f = compute_window_features(data, [TimeWindowScale("last3", max_events=3)])
    assert (f.stats[2:, 0, 4] == 0).all()


def test_wide_key_falls_back_to_ranked_times(monkeypatch):
    """When (user, time) does not pack into one int64, times are ranked first: same result."""
    users = [
        {
            "times": [10**9, 10**9 + 600, 10**9 + 4000, 10**9 + 4000],
            "items": [1, 2, 1, 3],
            "cats": [0, 0, 0, 0],
            "types": [0] * 4,
        },
        {"times": [5, 1805, 1806], "items": [2, 2, 2], "cats": [1, 1, 2], "types": [0] * 3},
    ]
    data = make_data(users, 0)
    expected = compute_window_features(data, SCALES[:2])
    monkeypatch.setattr(WF, "_PACKED_KEY_LIMIT", 1)
    ranked = compute_window_features(data, SCALES[:2])
    np.testing.assert_array_equal(ranked.starts, expected.starts)
    np.testing.assert_array_equal(ranked.stats, expected.stats)
    np.testing.assert_array_equal(ranked.starts, brute_force(data, SCALES[:2])[0])


def test_gaps_of_centuries_stay_exact():
    """Squared gaps beyond int64 use limbs: equal huge gaps still have a spread of exactly 0."""
    g = 5 * 10**9  # 158 years: g**2 > 2**63
    users = [
        {"times": [0, g, 2 * g, 3 * g], "items": [1, 2, 3, 4], "cats": [0] * 4, "types": [0] * 4}
    ]
    data = make_data(users, 0)
    f = compute_window_features(data, [TimeWindowScale("all", max_events=10)])
    assert (f.stats[:, 0, 4] == 0).all()
    assert f.stats[3, 0, 3] == pytest.approx(math.log1p(g) / GAP_SCALE)


def test_previous_same_value():
    values = np.array([3, 1, 3, 3, 2, 1, 3])
    users = np.array([0, 0, 0, 0, 0, 0, 1])
    assert previous_same_value(values, users).tolist() == [-1, -1, 0, 2, -1, 1, -1]


def test_no_events_and_no_scales():
    data = make_data([{"times": [1], "items": [1], "cats": [0], "types": [0]}], 0)
    f = compute_window_features(data, [])
    assert f.starts.shape == (1, 0) and f.stats.shape == (1, 0, 6)


@settings(max_examples=25, deadline=None)
@given(data=datasets(), max_len=st.integers(2, 6))
def test_batches_carry_the_reference_windows(data, max_len):
    """Every evaluation batch's ``window_start`` rebuilds exactly the membership that the reference
    :func:`window_masks` computes from the batch's own times, and ``scale_stats`` are the features
    of each anchor (zeros on padding)."""
    scales = SCALES
    feats = compute_window_features(data, scales)
    H = history_len(scales, max_len)
    targets = np.arange(data.num_events)[np.arange(data.num_events) > data.offsets[data.user_of_event]]
    if len(targets) == 0:
        return
    starts = data.offsets[data.user_of_event[targets]]
    cases = CaseBatches(data, targets, starts, max_len, H, True, feats)
    batch = cases[np.arange(len(targets))]
    valid = batch["items"] > 0
    masks = window_masks(scales, batch["times"], valid, max_len)  # [B, S, L, T]
    T = H + max_len
    j = torch.arange(T)
    anchor = torch.arange(H, T)
    rebuilt = (j >= batch["window_start"][..., None]) & (j <= anchor[None, None, :, None])
    assert torch.equal(rebuilt, masks)
    anchors = torch.from_numpy(targets)[:, None] - max_len + torch.arange(max_len)  # [B, L]
    at = torch.where(valid[:, -max_len:], anchors, 0)
    expected = torch.from_numpy(feats.stats)[at] * valid[:, -max_len:, None, None]
    torch.testing.assert_close(batch["scale_stats"], expected.permute(0, 2, 1, 3))
