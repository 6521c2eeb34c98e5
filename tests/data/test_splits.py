"""Splits are leak-free: training never reaches a target, inputs are strictly before their target."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_cli.data.prepared_data import PreparedData
from recsys_cli.data.splits import LeaveOneOut, Split, TemporalSplit
from recsys_cli.errors import ConfigError


def make_data(
    lengths: list[int], times: np.ndarray | None = None, has_time: bool = True
) -> PreparedData:
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    if times is None:
        times = np.arange(n, dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    return PreparedData(
        offsets=offsets,
        items=(np.arange(n) % 7 + 1).astype(np.int64),
        times=np.asarray(times, dtype=np.int64),
        event_types=np.zeros(n, np.int64),
        categories=np.zeros(n, np.int64),
        item_vocab=list(range(1, 8)),
        user_vocab=list(range(len(lengths))),
        event_type_vocab=[],
        category_vocab=[],
        has_time=has_time,
    )


def check_leak_free(data: PreparedData, split: Split) -> None:
    """The invariants every split must hold (see recsys_cli/data/splits.py)."""
    users = data.user_of_event
    starts, ends = data.offsets[:-1], data.offsets[1:]
    assert split.train_end.shape == (data.num_users,)
    assert (split.train_end >= starts).all() and (split.train_end <= ends).all()
    for targets in (split.val_targets, split.test_targets):
        assert targets.dtype == np.int64
        assert len(np.unique(users[targets])) == len(targets) or len(targets) == len(
            set(targets.tolist())
        )
        u = users[targets]
        # the input of a case is [start of its user, target): non-empty and strictly before it
        assert (targets > starts[u]).all()
        # no training event at or after a target of the same user (by position and by time)
        assert (split.train_end[u] <= targets).all()
        if data.has_time:
            last_train = split.train_end[u] - 1
            has_train = split.train_end[u] > starts[u]
            assert (data.times[last_train[has_train]] <= data.times[targets[has_train]]).all()


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=12))
def test_leave_one_out(lengths):
    data = make_data(lengths)
    split = LeaveOneOut()(data)
    check_leak_free(data, split)
    ends = data.offsets[1:]
    n = np.asarray(lengths)
    assert split.test_targets.tolist() == (ends[n >= 2] - 1).tolist()
    assert split.val_targets.tolist() == (ends[n >= 3] - 2).tolist()
    # training stops right before the validation target (users with >= 3 events)
    big = n >= 3
    assert (split.train_end[big] == ends[big] - 2).all()
    # the test input contains the validation event (SASRec/BERT4Rec protocol)
    users = data.user_of_event
    assert set(users[split.val_targets].tolist()) <= set(users[split.test_targets].tolist())


@st.composite
def timed_data(draw):
    lengths = draw(st.lists(st.integers(1, 10), min_size=1, max_size=10))
    times = []
    for n in lengths:
        gaps = draw(st.lists(st.sampled_from([0, 1, 5, 50]), min_size=n, max_size=n))
        start = draw(st.integers(0, 100))
        times.extend(np.cumsum([start] + gaps[1:]).tolist())
    return make_data(lengths, np.array(times))


@settings(max_examples=150, deadline=None)
@given(
    data=timed_data(),
    val_q=st.floats(0.05, 0.9),
    gap_q=st.floats(0.0, 0.5),
    targets=st.sampled_from(["first", "all"]),
)
def test_temporal_split_is_leak_free(data, val_q, gap_q, targets):
    test_q = min(val_q + gap_q, 0.95)
    try:
        split = TemporalSplit(val_q, test_q, targets)(data)
    except ConfigError as err:
        assert "no test events" in str(err)
        return
    check_leak_free(data, split)
    val_cut = int(np.quantile(data.times, val_q, method="lower")) + 1
    test_cut = int(np.quantile(data.times, test_q, method="lower")) + 1
    users = data.user_of_event
    # no training event at or after the cutoff, and every event before it is a training event
    for u in range(data.num_users):
        lo, hi = data.offsets[u], data.offsets[u + 1]
        train = np.arange(lo, hi) < split.train_end[u]
        assert (data.times[lo:hi][train] < val_cut).all()
        assert (data.times[lo:hi][~train] >= val_cut).all()
    assert (
        (data.times[split.val_targets] >= val_cut) & (data.times[split.val_targets] < test_cut)
    ).all()
    assert (data.times[split.test_targets] >= test_cut).all()
    if targets == "first":
        assert len(set(users[split.test_targets].tolist())) == len(split.test_targets)


def test_temporal_split_with_many_users_and_real_epochs():
    """Exact integer comparison: no rounding of (user, time) keys, even with 300k users."""
    rng = np.random.default_rng(0)
    lengths = np.full(300_000, 3)
    t = 1_700_000_000 + np.sort(rng.integers(0, 40, size=(300_000, 3)), axis=1).reshape(-1)
    data = make_data(lengths.tolist(), t)
    split = TemporalSplit("2023-11-14T22:13:40+00:00", "2023-11-14T22:13:55+00:00")(data)
    val_cut = 1_700_000_020
    users = data.user_of_event
    train = np.arange(data.num_events) < split.train_end[users]
    assert (data.times[train] < val_cut).all() and (data.times[~train] >= val_cut).all()


def test_temporal_split_by_date_and_errors():
    day = 86400
    data = make_data([3, 3], np.array([0, 10 * day, 20 * day, 5 * day, 15 * day, 25 * day]))
    split = TemporalSplit("1970-01-11", "1970-01-21", targets="all")(data)
    assert split.train_end.tolist() == [1, 4]
    assert split.val_targets.tolist() == [1, 4] and split.test_targets.tolist() == [2, 5]
    with pytest.raises(ConfigError, match="not an ISO date"):
        TemporalSplit("yesterday", 0.9)(data)
    with pytest.raises(ConfigError, match="must be in \\(0, 1\\)"):
        TemporalSplit(1.5, 0.9)(data)
    with pytest.raises(ConfigError, match="before val_cutoff"):
        TemporalSplit(0.9, 0.5)(data)
    with pytest.raises(ConfigError, match="no test events"):
        TemporalSplit("1970-01-02", "1999-01-01")(data)
    with pytest.raises(ConfigError, match="needs timestamps"):
        TemporalSplit(0.5, 0.8)(make_data([3], has_time=False))
    with pytest.raises(ConfigError, match="'first' or 'all'"):
        TemporalSplit(0.5, 0.8, targets="some")
