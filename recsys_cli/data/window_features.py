"""Per-event time-window features over the full history, exact and vectorised.

For every event ``e`` (global index into the CSR arrays of :class:`PreparedData`, user ``u``) and
every scale ``s``, the window is the contiguous run ``[start[e, s], e]`` of the user's events with

    start = max(offsets[u], e - max_events + 1, e - last + 1 (count windows),
                first i >= offsets[u] with times[i] >= times[e] - seconds (duration windows))

so equal timestamps and a gap of exactly ``seconds`` are inside, and nothing after ``e`` enters
(the semantics of :mod:`recsys_cli.contract.scales`, anchored at the last observed event; the tests
check them against a brute-force statement of it). They are
computed over the whole history, not only the ``H + L`` events a batch carries: a ``30d`` scale
capped at 200 events really covers 200 events, however long ``max_len`` is.

Statistics, F = 6 + K:

====  =====================  ==============================================================
0     ``log_count``          log1p(count) / log1p(max_events)
1     ``distinct_items``     distinct items / count
2     ``distinct_categories``  distinct categories / count (0 = unknown counts as a value)
3     ``log_mean_gap``       log1p((t_e - t_start) / (count - 1)) / log1p(1 year); 0 if count 1
4     ``log_std_gap``        log1p(std of the gaps t_j - t_{j-1}, j in (start, e]) / log1p(1 year)
5     ``log_since_prev``     log1p(t_e - t_{e-1}) / log1p(1 year); 0 for a user's first event
6..   ``type_<name>``        share of event type k (1..K) in the window
====  =====================  ==============================================================

Cost per scale: O(E log E) numpy work and O(E) memory, no Python loop over events or users:

- starts: one ``searchsorted`` over a (user, time) key (both sorted, so the key is sorted);
- counts, gap sums (telescoping), squared-gap sums and type histograms: prefix sums;
- distinct values: ``prev[j]`` is the previous event of the same user with the same value (-1 if
  none). The repeats of window ``[start_e, e]`` are ``#{j in [start_e, e] : prev_j >= start_e}``.
  ``start`` is non-decreasing over the whole flat array, so ``j`` is a repeat exactly for the
  anchors ``e in [j, E_j)`` with ``E_j = searchsorted(start, prev_j, side='right')``; a difference
  array (+1 at ``j``, -1 at ``max(E_j, j)``) and a cumsum count every window's repeats.

Squared-gap sums are differences of wrapping int64 prefix sums, exact whenever the window's true
sum is below 2**63, so a window whose gaps are all equal has a spread of exactly 0 (float64 prefix
sums over 10M events would lose small windows entirely). With gaps of decades the squares are
split into three 20-bit limbs, each summed exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recsys_cli.contract.scales import TimeWindowScale
from recsys_cli.data.prepared_data import PreparedData

GAP_SCALE = math.log1p(365 * 86400.0)  # gaps are normalised by log1p(1 year)
BASE_FEATURES = (
    "log_count",
    "distinct_items",
    "distinct_categories",
    "log_mean_gap",
    "log_std_gap",
    "log_since_prev",
)
# (user, time) keys are packed into one int64 when users * time span stays below this;
# otherwise times are replaced by their dense rank first (same order, smaller range).
_PACKED_KEY_LIMIT = 2**62


@dataclass
class WindowFeatures:
    """Window starts and statistics of every event at every scale.

    starts: [E, S] int64, global index of each window's first member (window = [start, e]);
    stats: [E, S, F] float32, F = 6 + num_event_types, in the order of ``names``;
    scales: the S scales, in the order of the second axis.
    """

    starts: np.ndarray
    stats: np.ndarray
    names: list[str]
    scales: list[TimeWindowScale]

    @property
    def counts(self) -> np.ndarray:
        """[E, S] number of events in each window (>= 1: the anchor itself is always inside)."""
        return np.arange(len(self.starts))[:, None] - self.starts + 1


def feature_names(data: PreparedData) -> list[str]:
    """The F feature names for ``data``: the six base statistics, then one share per event type."""
    return list(BASE_FEATURES) + [f"type_{name}" for name in data.event_type_vocab]


def _user_time_key(
    users: np.ndarray, times: np.ndarray
) -> tuple[np.ndarray, Callable[[int], np.ndarray]]:
    """A sorted int64 key of (user, time) for every event, and ``lower(seconds)`` giving, for
    every event, a key such that ``searchsorted(key, lower(seconds), 'left')`` is the first event
    of the same user at or after ``times - seconds`` (or an index before the user's first event,
    which the caller clips)."""
    t0 = int(times.min())
    span = int(times.max()) - t0 + 1
    num_users = int(users.max()) + 1
    if num_users * (span + 1) < _PACKED_KEY_LIMIT:
        key = users * (span + 1) + (times - t0)
        return key, lambda seconds: key - seconds
    # Dense ranks keep the order and shrink the range to <= E values.
    uniq = np.unique(times)
    base = users * (len(uniq) + 1)
    key = base + np.searchsorted(uniq, times)
    return key, lambda seconds: base + np.searchsorted(uniq, times - seconds, side="left")


class _StartFinder:
    """Window starts of one scale at a time, sharing the (user, time) key between scales."""

    def __init__(self, data: PreparedData, users: np.ndarray):
        self.idx = np.arange(data.num_events, dtype=np.int64)
        self.first = data.offsets[:-1][users]
        self.users, self.times = users, data.times.astype(np.int64)
        self._key: tuple[np.ndarray, Callable[[int], np.ndarray]] | None = None

    def __call__(self, scale: TimeWindowScale) -> np.ndarray:
        start = np.maximum(self.first, self.idx - (scale.max_events - 1))
        if scale.last is not None:
            start = np.maximum(start, self.idx - (scale.last - 1))
        if scale.seconds is not None:
            if self._key is None:
                self._key = _user_time_key(self.users, self.times)
            key, lower = self._key
            start = np.maximum(start, np.searchsorted(key, lower(scale.seconds), side="left"))
        return start


def previous_same_value(values: np.ndarray, users: np.ndarray) -> np.ndarray:
    """[E] -> [E]: global index of the previous event of the same user with the same value, or -1.

    values, users: [E] non-negative ints (events grouped by user, in time order within a user).
    """
    n = len(values)
    prev = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return prev
    values, users = values.astype(np.int64), users.astype(np.int64)
    stride = int(values.max()) + 1
    if (int(users.max()) + 1) * stride < _PACKED_KEY_LIMIT:
        key = users * stride + values
        order = np.argsort(key, kind="stable")  # ties keep the index (time) order
        key_sorted = key[order]
        same = key_sorted[1:] == key_sorted[:-1]
    else:
        order = np.lexsort((values, users))  # stable as well
        u, v = users[order], values[order]
        same = (u[1:] == u[:-1]) & (v[1:] == v[:-1])
    prev[order[1:][same]] = order[:-1][same]
    return prev


def _repeats(prev: np.ndarray, start: np.ndarray, anchors_upto: np.ndarray) -> np.ndarray:
    """[E] number of events j in [start_e, e] with prev_j >= start_e (see the module docstring).

    anchors_upto[p] = #{e : start_e <= p} (= searchsorted(start, p, side='right')).
    """
    n = len(prev)
    j = np.flatnonzero(prev >= 0)
    end = np.maximum(anchors_upto[prev[j]], j)
    diff = np.bincount(j, minlength=n + 1) - np.bincount(end, minlength=n + 1)
    return np.cumsum(diff[:n])


def _square_limbs(gaps: np.ndarray, max_count: int) -> list[tuple[np.ndarray, float]]:
    """Terms (values [E] int64, weight) with sum(weight * values) = gaps**2 and exact int64 window
    sums over up to ``max_count`` events (see ``compute_window_features``)."""
    with np.errstate(over="ignore"):
        if float(gaps.max()) ** 2 * max_count < 2.0**62:
            return [(gaps * gaps, 1.0)]
    hi, lo = gaps >> 20, gaps & ((1 << 20) - 1)
    return [(hi * hi, 2.0**40), (2 * hi * lo, 2.0**20), (lo * lo, 1.0)]


# Events per block in the elementwise stage: its [block, S, F] slice of the output and the
# float temporaries stay in cache while the features are written into the [E, S, F] layout.
_BLOCK = 1 << 16


def compute_window_features(data: PreparedData, scales: list[TimeWindowScale]) -> WindowFeatures:
    """Starts [E, S] and statistics [E, S, F] of every event's window at every scale.

    See the module docstring for the window and feature definitions. Memory: the outputs
    (E * S * (8 + 4F) bytes), distinct counts (E * S * 4 bytes with max_events < 2**16) and a few
    [E]-sized integer temporaries.
    """
    n, S = data.num_events, len(scales)
    K = data.num_event_types
    names = feature_names(data)
    F = len(names)
    starts = np.empty((n, S), dtype=np.int64)
    stats = np.empty((n, S, F), dtype=np.float32)
    if n == 0 or S == 0:
        return WindowFeatures(starts, stats, names, list(scales))

    users = data.user_of_event.astype(np.int64)
    times = data.times.astype(np.int64)
    finder = _StartFinder(data, users)
    prev_items = previous_same_value(data.items, users)
    prev_cats = previous_same_value(data.categories, users)
    del users

    # distinct items / categories of every window, per scale (the only per-scale global pass)
    max_events = np.array([sc.max_events for sc in scales], dtype=np.int64)
    small = int(max_events.max()) < 2**16
    distinct = np.empty((2, S, n), dtype=np.uint16 if small else np.int64)
    for s, scale in enumerate(scales):
        start = finder(scale)
        starts[:, s] = start
        anchors_upto = np.cumsum(np.bincount(start, minlength=n))
        count = np.arange(1, n + 1) - start
        distinct[0, s] = count - _repeats(prev_items, start, anchors_upto)
        distinct[1, s] = count - _repeats(prev_cats, start, anchors_upto)
    del finder, prev_items, prev_cats, start, anchors_upto, count

    # gaps g_j = t_j - t_{j-1} inside a user (0 at a user's first event)
    gaps = np.zeros(n, dtype=np.int64)
    gaps[1:] = times[1:] - times[:-1]
    gaps[data.offsets[:-1][np.diff(data.offsets) > 0]] = 0
    since_prev = (np.log1p(gaps.astype(np.float64)) / GAP_SCALE).astype(np.float32)
    # Squared-gap prefix sums with a leading 0, as limbs g = hi * 2**20 + lo so that every window
    # sum is an exact (wrapping) int64: one limb while gap**2 * max_events < 2**62 (gaps under
    # about 80 years), else three (gaps up to 2**40 s, windows up to 2**22 events).
    limbs = _square_limbs(gaps, int(max_events.max()))
    sq_prefix = np.zeros((n + 1, len(limbs)), dtype=np.int64)
    with np.errstate(over="ignore"):
        for k, (limb, _) in enumerate(limbs):
            np.cumsum(limb, out=sq_prefix[1:, k])
    limb_scale = np.array([w for _, w in limbs], dtype=np.float64)
    del gaps
    type_prefix = None  # [E + 1, K] event-type counts
    if K:
        type_prefix = np.zeros((n + 1, K), dtype=np.int32 if n < 2**31 else np.int64)
        kinds = np.arange(1, K + 1, dtype=data.event_types.dtype)
        np.cumsum(data.event_types[:, None] == kinds[None, :], axis=0, out=type_prefix[1:])

    inv_log_max = (1.0 / np.log1p(max_events.astype(np.float64)))[None, :]  # [1, S]
    for a in range(0, n, _BLOCK):
        b = min(a + _BLOCK, n)
        out = stats[a:b]  # [blk, S, F]
        st = starts[a:b]  # [blk, S]
        count = np.arange(a + 1, b + 1)[:, None] - st  # >= 1: the anchor is always inside
        inv = 1.0 / count
        out[..., 0] = np.log1p(count) * inv_log_max
        out[..., 1] = distinct[0, :, a:b].T * inv
        out[..., 2] = distinct[1, :, a:b].T * inv
        # the gaps of [start, e] telescope to t_e - t_start; their squares come from prefix sums
        n_gaps = np.maximum(count - 1, 1)
        mean_gap = (times[a:b, None] - times[st]) / n_gaps  # 0 for one-event windows
        with np.errstate(over="ignore"):
            sq_limbs = sq_prefix[a + 1 : b + 1, None] - sq_prefix[st + 1]  # [blk, S, limbs]
        sq_sum = sq_limbs.astype(np.float64) @ limb_scale
        var = np.maximum(sq_sum / n_gaps - mean_gap * mean_gap, 0.0)
        out[..., 3] = np.log1p(mean_gap) * (1.0 / GAP_SCALE)
        out[..., 4] = np.log1p(np.sqrt(var)) * (1.0 / GAP_SCALE)
        out[..., 5] = since_prev[a:b, None]
        if type_prefix is not None:
            hist = type_prefix[a + 1 : b + 1, None, :] - type_prefix[st]  # [blk, S, K]
            out[..., 6:] = hist * inv[..., None]
    return WindowFeatures(starts, stats, names, list(scales))
