"""Train / validation / test splits over prepared data, leak-free by construction.

A split is expressed as index arithmetic on the CSR arrays of :class:`PreparedData`:

- ``train_end[u]``: user ``u``'s training events are the global indices ``offsets[u]:train_end[u]``;
  every training target and every training input lies in that range.
- ``val_targets`` / ``test_targets``: global event indices to predict. The input of the case with
  target ``t`` of user ``u`` is the events ``offsets[u]:t``: strictly before the target, and in time
  order, so nothing at or after the target (not even its timestamp) reaches the model.

Cold-start protocol (``data.cold_items``): :func:`held_out_items` draws items to hold out of
training and :func:`training_view` copies the training events without theirs; the split itself
(and every evaluation case) is unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from recsys_cli.data.prepared_data import PreparedData
from recsys_cli.errors import ConfigError


@dataclass
class Split:
    train_end: np.ndarray  # [U] int64 exclusive end of each user's training events
    val_targets: np.ndarray  # [Mv] int64 global event indices
    test_targets: np.ndarray  # [Mt] int64 global event indices
    description: str = ""


class LeaveOneOut:
    """Last event of each user is the test target, the one before it the validation target.

    Training uses everything before the validation target; the test input includes the validation
    event (as in the SASRec / BERT4Rec protocol, so numbers are comparable with published tables).
    Users with 2 events get a test case only; users with fewer than 4 events have no training target.
    """

    def __call__(self, data: PreparedData) -> Split:
        starts, ends = data.offsets[:-1], data.offsets[1:]
        n = ends - starts
        test = ends[n >= 2] - 1
        val = ends[n >= 3] - 2
        train_end = np.maximum(ends - 2, starts)
        return Split(train_end, val.astype(np.int64), test.astype(np.int64), "leave-one-out")


def _parse_cutoff(value: str | float, times: np.ndarray, key: str) -> int:
    """A cutoff as unix seconds: an ISO date/time, or a fraction in (0, 1) of events by time."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 < value < 1:
            raise ConfigError(
                f"{key}={value}: a numeric cutoff is a quantile of event times and must be in (0, 1)"
            )
        return int(np.quantile(times, value, method="lower")) + 1
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(
            f"{key}={value!r} is not an ISO date/time (e.g. 2024-03-01 or 2024-03-01T12:00:00) "
            "nor a quantile in (0, 1)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


class TemporalSplit:
    """A global time split: no training event at or after ``val_cutoff``.

    Validation targets are events in ``[val_cutoff, test_cutoff)``, test targets events at or after
    ``test_cutoff``; with ``targets: first`` only each user's first such event is a case, with
    ``targets: all`` every one is (each with its own full history as input). Cutoffs are ISO
    date/times (UTC unless they say otherwise) or quantiles of all event times in (0, 1).
    """

    def __init__(self, val_cutoff: str | float, test_cutoff: str | float, targets: str = "first"):
        if targets not in ("first", "all"):
            raise ConfigError(f"data.split.targets={targets!r}: use 'first' or 'all'")
        self.val_cutoff, self.test_cutoff, self.targets = val_cutoff, test_cutoff, targets

    def __call__(self, data: PreparedData) -> Split:
        if not data.has_time:
            raise ConfigError(
                "data.split: a temporal split needs timestamps and this dataset has none; "
                "use data/split=leave_one_out"
            )
        val_cut = _parse_cutoff(self.val_cutoff, data.times, "data.split.val_cutoff")
        test_cut = _parse_cutoff(self.test_cutoff, data.times, "data.split.test_cutoff")
        if test_cut < val_cut:
            raise ConfigError(
                f"data.split: test_cutoff ({self.test_cutoff}) is before val_cutoff ({self.val_cutoff})"
            )
        users = data.user_of_event
        starts = data.offsets[:-1]
        # Per user, events are time-sorted: the training events (before val_cut) are a prefix.
        before = np.bincount(users[data.times < val_cut], minlength=data.num_users)
        train_end = (starts + before).astype(np.int64)
        idx = np.arange(data.num_events)
        has_history = idx > data.offsets[users]
        in_val = (data.times >= val_cut) & (data.times < test_cut) & has_history
        in_test = (data.times >= test_cut) & has_history
        if self.targets == "first":
            in_val &= _first_per_user(in_val, users)
            in_test &= _first_per_user(in_test, users)
        val, test = idx[in_val], idx[in_test]
        if len(test) == 0:
            raise ConfigError(
                f"data.split: no test events at or after test_cutoff={self.test_cutoff}; "
                "choose an earlier cutoff"
            )
        return Split(train_end, val, test, f"temporal (val from {val_cut}, test from {test_cut})")


def _first_per_user(mask: np.ndarray, users: np.ndarray) -> np.ndarray:
    """[E] True at the first True of ``mask`` within each user's events."""
    idx = np.flatnonzero(mask)
    first = np.zeros_like(mask)
    if len(idx):
        keep = np.concatenate([[True], users[idx[1:]] != users[idx[:-1]]])
        first[idx[keep]] = True
    return first


# the per-event arrays of PreparedData (CSR over users, indexed by global event index); the
# context columns (``PreparedData.context``, one array per name) are per-event arrays as well
EVENT_ARRAYS = ("items", "times", "event_types", "categories")


def held_out_items(num_items: int, fraction: float, seed: int) -> np.ndarray:
    """``round(fraction * num_items)`` item ids of ``1..num_items``, drawn without replacement by
    ``seed`` and sorted: the items ``data.cold_items`` holds out of training."""
    count = int(round(fraction * num_items))
    drawn = np.random.default_rng(seed).choice(num_items, size=count, replace=False)
    return np.sort(drawn + 1).astype(np.int64)


def training_view(data: PreparedData, train_end: np.ndarray, held: np.ndarray) -> tuple[PreparedData, np.ndarray]:
    """The training events of ``data`` without any event of the ``held`` items, as CSR arrays of
    their own; returns the view and its ``train_end`` (every event of the view is a training event).

    The view has the same users (a user may keep no event), vocabularies and statistics; each
    user's kept training events stay in time order, so a held-out item's event is neither an input
    nor a target of any training case built from the view: its neighbours become adjacent.
    Evaluation cases are built from ``data`` itself, where those events remain.
    """
    users = data.user_of_event
    is_held = np.zeros(data.num_items + 1, dtype=bool)
    is_held[held] = True
    keep = (np.arange(data.num_events) < train_end[users]) & ~is_held[data.items]
    offsets = np.zeros(data.num_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users[keep], minlength=data.num_users), out=offsets[1:])
    arrays = {name: getattr(data, name)[keep] for name in EVENT_ARRAYS}
    context = {name: codes[keep] for name, codes in data.context.items()}
    view = dataclasses.replace(data, offsets=offsets, context=context, **arrays)
    return view, offsets[1:].copy()
