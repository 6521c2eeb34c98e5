"""Window membership and per-window statistics on hand-made and random sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_cli.data.windows import (
    history_len,
    parse_duration,
    parse_scales,
    window_masks,
    window_starts,
)
from recsys_cli.errors import ConfigError
from recsys_cli.models.scales import _GAP_SCALE, previous_occurrence, window_statistics

SCALES = parse_scales(
    [
        {"name": "session", "window": "30m", "max_events": 3},
        {"name": "day", "window": "1d"},
        {"name": "last2", "window": {"last": 2}},
        {"name": "all", "window": None},
    ],
    default_max_events=6,
)


def test_parse_durations_and_errors():
    assert parse_duration("30m", "k") == 1800
    assert parse_duration("1d", "k") == 86400
    assert parse_duration("2w", "k") == 14 * 86400
    with pytest.raises(ConfigError, match=r"scales.windows\[0\].window='30 minutes'"):
        parse_scales([{"name": "s", "window": "30 minutes"}], 10)
    with pytest.raises(ConfigError, match="unique"):
        parse_scales([{"name": "a", "window": None}, {"name": "a", "window": "1d"}], 10)
    with pytest.raises(ConfigError, match="unknown keys"):
        parse_scales([{"name": "a", "windw": "1d"}], 10)
    with pytest.raises(ConfigError, match="last: N"):
        parse_scales([{"name": "a", "window": {"first": 3}}], 10)


def test_history_len_covers_the_longest_scale():
    assert history_len(SCALES, max_len=4) == 5  # 'all' sees up to 6 events: 5 before the anchor
    assert history_len([], max_len=4) == 0


def _hand_made():
    # one user, memory of T = 8 (H = 4 older events + L = 4 encoder inputs), 2 padded slots.
    # gaps (minutes): -, 10, 40 (session break), 0 (equal timestamps), 5, 2 days, 10
    minutes = [0, 10, 50, 50, 55, 55 + 2 * 1440, 55 + 2 * 1440 + 10]
    times = torch.tensor([[0, 0] + [1_700_000_000 + 60 * m for m in minutes[1:]]])
    items = torch.tensor([[0, 0, 5, 6, 5, 7, 5, 8]])
    return times, items


def test_window_membership_by_hand():
    times, items = _hand_made()
    valid = items > 0
    masks = window_masks(SCALES, times, valid, num_positions=4)  # [1, S, 4, 8]
    # anchor positions 4..7 (memory coordinates); real events occupy 2..7
    members = {s.name: [torch.nonzero(masks[0, k, i]).flatten().tolist() for i in range(4)] for k, s in enumerate(SCALES)}
    # session (30 m, <= 3 events): break before index 3 (40 min gap); equal timestamps are inside
    assert members["session"] == [[3, 4], [3, 4, 5], [6], [6, 7]]
    # day: the 2-day gap separates index 6 from everything before it
    assert members["day"] == [[2, 3, 4], [2, 3, 4, 5], [6], [6, 7]]
    assert members["last2"] == [[3, 4], [4, 5], [5, 6], [6, 7]]
    # all: up to 6 events, never padding
    assert members["all"] == [[2, 3, 4], [2, 3, 4, 5], [2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7]]


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 14), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_window_starts_match_masks(lengths, seed):
    rng = np.random.default_rng(seed)
    T, L = 14, 5
    B = len(lengths)
    n = torch.tensor(lengths)
    valid = torch.arange(T)[None, :] >= (T - n)[:, None]
    gaps = torch.from_numpy(rng.choice([0, 60, 1700, 1800, 1801, 90_000], size=(B, T)))
    times = torch.where(valid, 1_000_000 + gaps.cumsum(1), torch.zeros_like(gaps))
    masks = window_masks(SCALES, times, valid, L)
    starts = window_starts(SCALES, times, valid, L)
    j = torch.arange(T)
    anchor = torch.arange(T - L, T)
    rebuilt = (j >= starts[..., None]) & (j <= anchor[None, None, :, None])
    assert torch.equal(masks, rebuilt)


def _brute_force_stats(items, cats, types, times, mask_row, max_events, num_types):
    idx = [j for j, m in enumerate(mask_row) if m]
    if not idx:
        return [0.0] * (6 + num_types)
    t = [float(times[j]) for j in idx]
    g = [t[k] - t[k - 1] for k in range(1, len(t))]
    mean = sum(g) / len(g) if g else 0.0
    var = sum(x * x for x in g) / len(g) - mean**2 if g else 0.0
    anchor = idx[-1]
    prev_gap = float(times[anchor] - times[anchor - 1]) if anchor > 0 and items[anchor - 1] > 0 else 0.0
    out = [
        math.log1p(len(idx)) / math.log1p(max_events),
        len({items[j] for j in idx}) / len(idx),
        len({cats[j] for j in idx}) / len(idx),
        math.log1p(mean) / _GAP_SCALE,
        math.log1p(math.sqrt(max(var, 0.0))) / _GAP_SCALE,
        math.log1p(prev_gap) / _GAP_SCALE,
    ]
    out += [sum(types[j] == k for j in idx) / len(idx) for k in range(1, num_types + 1)]
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(0, 12))
def test_window_statistics_match_brute_force(seed, n):
    rng = np.random.default_rng(seed)
    T, L, num_types = 12, 4, 3
    valid = torch.arange(T)[None, :] >= T - n
    items = torch.where(valid, torch.from_numpy(rng.integers(1, 5, (1, T))), 0)
    cats = torch.where(valid, torch.from_numpy(rng.integers(1, 3, (1, T))), 0)
    types = torch.where(valid, torch.from_numpy(rng.integers(1, num_types + 1, (1, T))), 0)
    gaps = torch.from_numpy(rng.choice([0, 30, 600, 2000, 100_000], size=(1, T)))
    times = torch.where(valid, 1_700_000_000 + gaps.cumsum(1), torch.zeros_like(gaps))
    batch = {"items": items, "categories": cats, "event_types": types, "times": times}
    starts = window_starts(SCALES, times, valid, L)
    masks = window_masks(SCALES, times, valid, L)
    max_events = torch.tensor([s.max_events for s in SCALES])
    stats = window_statistics(starts, batch, num_types, max_events)  # [1, S, L, F]
    for s, scale in enumerate(SCALES):
        for i in range(L):
            expected = _brute_force_stats(
                items[0].tolist(), cats[0].tolist(), types[0].tolist(), times[0].tolist(),
                masks[0, s, i].tolist(), scale.max_events, num_types,
            )
            torch.testing.assert_close(stats[0, s, i], torch.tensor(expected, dtype=torch.float32), atol=2e-5, rtol=1e-4)


def test_previous_occurrence():
    values = torch.tensor([[3, 1, 3, 3, 2, 1]])
    assert previous_occurrence(values).tolist() == [[-1, -1, 0, 2, -1, 1]]
