"""Query cases: what a trained model is asked after training, a case with no target.

An evaluation case predicts event ``e`` from the user's events before it; a *query case* predicts
what comes after a history that ends at an exclusive index ``end`` and has no target: by default
each user's whole known history (every event of the prepared data, not only the training split),
or any prefix (:func:`query_cases` with the ends of evaluation targets gives the evaluation cases'
inputs, which is how the tests check recommendations against evaluation). The batch holds what an
evaluation batch holds except ``targets``, ``target_types`` and ``target_times``: the memory
``[end - L - H, end)`` (padding trimmed), its window features (computed over the whole history,
as evaluation's are, so a multi-scale model sees the same windows), ``users`` and ``seen``.

An ad-hoc history (raw item ids, and optionally times and event types, of someone not in the
data) becomes a one-user prepared dataset (:func:`adhoc_history`), whose window features are
computed by the same :func:`~recsys_cli.data.window_features.compute_window_features`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recsys_cli.data.batches import trim_padding
from recsys_cli.data.datamodule import CaseBatches, SequenceDataModule
from recsys_cli.data.prepared_data import PreparedData
from recsys_cli.data.window_features import compute_window_features
from recsys_cli.errors import ConfigError


class QueryCases(CaseBatches):
    """Cases that end at ``ends`` (exclusive) without a target; indexable by a list of case ids
    like :class:`~recsys_cli.data.datamodule.CaseBatches`, one collated batch per list."""

    def __getitem__(self, case_ids) -> dict[str, torch.Tensor]:
        case_ids = np.asarray(case_ids)
        ends, starts = self.ends[case_ids], self.starts[case_ids]
        batch, _, _ = self.memory_fields(ends, starts)
        batch["users"] = self.users[case_ids]
        batch["seen"] = self.seen_items(ends, starts)
        batch = self.task.query(batch, self.data.num_items + 1)  # cloze: a [MASK] slot after the history
        if self.trim:
            batch = trim_padding(batch, self.max_len)
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


def query_cases(dm: SequenceDataModule, ends: np.ndarray) -> QueryCases:
    """Query cases of the data module's prepared data whose histories end before the global event
    indices ``ends`` [n] (each after its user's first event); ``users`` is the user's index + 1
    for a user known to training, else 0, as in evaluation."""
    data = dm.load()
    ends = np.asarray(ends, dtype=np.int64)
    users = data.user_of_event[ends - 1] if len(ends) else ends
    starts = data.offsets[users] if len(ends) else ends
    field = np.where(dm.known_users()[users], users + 1, 0) if len(ends) else ends
    return QueryCases(data, ends, starts, dm.max_len, dm.history_len, True, dm.features, field, trim=True, task=dm.task)


def whole_history_cases(dm: SequenceDataModule, users: np.ndarray) -> QueryCases:
    """One query case per user index of ``users`` [n]: the user's whole known history."""
    data = dm.load()
    return query_cases(dm, data.offsets[np.asarray(users, dtype=np.int64) + 1])


def find_ids(vocab: Sequence, raw_ids: Sequence) -> tuple[np.ndarray, list[str]]:
    """(indices into ``vocab`` of the raw ids found, in order; the raw ids not in it). Ids are
    compared as strings, so ``7`` finds the user ``"7"``."""
    position = {str(v): i for i, v in enumerate(vocab)}
    found = [position[str(r)] for r in raw_ids if str(r) in position]
    unknown = [str(r) for r in raw_ids if str(r) not in position]
    return np.asarray(found, dtype=np.int64), unknown


@dataclass
class AdhocHistory:
    """One ad-hoc history as a query: its case, the raw item ids that were not in the catalogue
    (skipped) and what was filled in because it was not given."""

    cases: QueryCases
    unknown: list[str]
    notes: list[str]


def _default_times(data: PreparedData, n: int) -> tuple[np.ndarray, str]:
    """Times for ``n`` events given without times: one median gap of the data apart, the last at
    the data's last time (positions when the data has no times)."""
    if not data.has_time:
        return np.arange(n, dtype=np.int64), "times: positions (the data has no timestamps)"
    same_user = np.diff(data.user_of_event) == 0
    gaps = np.diff(data.times)[same_user]
    gap = int(np.median(gaps)) if len(gaps) else 0
    last = int(data.times.max()) if data.num_events else 0
    return last - gap * np.arange(n - 1, -1, -1, dtype=np.int64), (
        f"times not given: the events are {gap} s apart (the data's median gap), the last at the data's last time"
    )


def adhoc_history(
    dm: SequenceDataModule,
    items: Sequence,
    times: Sequence[int] | None = None,
    event_types: Sequence[str] | None = None,
) -> AdhocHistory:
    """The query of a history given by raw item ids (oldest first), with its times (unix seconds)
    and event type names when given. Items not in the catalogue are skipped (and listed); an
    item's category is the one the data gives it; unnamed event types default to the data's most
    frequent one. Raises a ConfigError when the lists' lengths differ, a type is unknown or no
    item is known."""
    data = dm.load()
    for name, values in (("times", times), ("event_types", event_types)):
        if values is not None and len(values) != len(items):
            raise ConfigError(f"{name} has {len(values)} values for {len(items)} items in history; give one per item")
    indices, unknown = find_ids(data.item_vocab, items)
    known = np.array([str(r) not in set(unknown) for r in items], dtype=bool)
    if len(indices) == 0:
        raise ConfigError(f"none of the {len(items)} items of history is in the run's catalogue; nothing to recommend from")
    notes: list[str] = []
    n = len(indices)
    if times is None:
        event_times, note = _default_times(data, n)
        notes.append(note)
    else:
        event_times = np.asarray(times, dtype=np.int64)[known]
        if np.any(np.diff(event_times) < 0):
            raise ConfigError("times must be in the order of history (oldest first), not decreasing")
    type_names = [str(v) for v in data.event_type_vocab]
    if event_types is None:
        common = int(np.bincount(data.event_types, minlength=len(type_names) + 1)[1:].argmax()) + 1 if type_names else 0
        types = np.full(n, common, dtype=np.int64)
        if len(type_names) > 1:
            notes.append(f"event_types not given: every event is '{type_names[common - 1]}' (the data's most frequent)")
    else:
        bad = [t for t in event_types if str(t) not in type_names]
        if bad:
            raise ConfigError(f"event_types: unknown type {bad[0]!r}; the data's types: {', '.join(type_names)}")
        types = np.array([type_names.index(str(t)) + 1 for t in event_types], dtype=np.int64)[known]
    category_of = np.zeros(data.num_items + 1, dtype=np.int64)
    category_of[data.items] = data.categories
    item_ids = indices + 1  # vocabulary position -> item index (0 is padding)
    one = PreparedData(
        offsets=np.array([0, n], dtype=np.int64), items=item_ids, times=event_times, event_types=types,
        categories=category_of[item_ids], item_vocab=data.item_vocab, user_vocab=["adhoc"],
        event_type_vocab=data.event_type_vocab, category_vocab=data.category_vocab, has_time=data.has_time,
        context={name: np.zeros(n, dtype=np.int64) for name in data.context}, context_vocab=data.context_vocab,
    )  # fmt: skip
    features = compute_window_features(one, dm.scales) if dm.scales else None
    ends, starts, users = np.array([n]), np.array([0]), np.array([0])
    cases = QueryCases(one, ends, starts, dm.max_len, dm.history_len, True, features, users, trim=True, task=dm.task)
    return AdhocHistory(cases, unknown, notes)
