"""Scale parsing and the reference window membership on a hand-made sequence.

The per-event window starts and statistics that batches carry are tested against brute force in
tests/test_window_features.py."""

from __future__ import annotations

import pytest
import torch
from conftest import window_masks

from recsys_cli.contract.scales import history_len, parse_duration, parse_scales
from recsys_cli.errors import ConfigError

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
