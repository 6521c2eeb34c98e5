"""What the prepared data tells every builder: sizes, vocabularies, the parsed scales.

:class:`DataSpec` is built once, after preparation (:meth:`SequenceDataModule.spec`), and handed to
the model, the objective and the reports; nothing downstream reads the data module's fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from recsys_cli.contract.scales import ScaleSet


@dataclass(frozen=True, eq=False)
class DataSpec:
    """Sizes and names of a prepared dataset and the batches built from it.

    Index conventions: items 1..``num_items``, event types 1..K, categories 1..C; 0 is padding or
    unknown everywhere. ``item_titles[i - 1]`` is the title of item ``i`` (None where unknown);
    ``item_fields[name][i - 1]`` its text field ``name`` (``title``, ``category``, ``year``,
    ``genres``, ``brand``, ``description``: what the reader provides). ``item_train_counts[i]`` is
    the number of training events of item ``i`` in the split (0: a cold item; index 0 unused).
    ``context_columns`` maps each context column the data config names (``data.columns.context``)
    to its number of values V (codes 1..V, 0 = missing), in the order of the last axis of the
    batch field ``context``; empty when none is named (and batches then have no ``context``).
    """

    num_items: int
    num_users: int
    max_len: int  # L: encoder positions per case
    scales: ScaleSet  # the time-window scales batches carry features for
    event_types: tuple[str, ...] = ()  # names of event types 1..K
    categories: tuple[str, ...] = ()  # names of categories 1..C
    stat_names: tuple[str, ...] = ()  # the F window statistics, in ``scale_stats`` order
    has_time: bool = True  # False: times are per-user positions, only count windows apply
    item_titles: tuple[str | None, ...] | None = None
    item_fields: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)
    item_train_counts: np.ndarray | None = None  # [N + 1] int64
    # items held out of training entirely (data.cold_items): not even candidates of the training loss
    held_out_items: np.ndarray | None = None
    # [K + 1, K + 1] int64: how often an event of type a (row) is followed by one of type b (column)
    # in a user's training events (the behaviour baselines' counts; index 0 = unknown type)
    type_transitions: np.ndarray | None = None
    # context column name -> number of values V (codes 1..V; 0 = missing or padding), in the order
    # of the batch field ``context`` [B, T, C]
    context_columns: Mapping[str, int] = field(default_factory=dict)
    # the item id ``N + 1`` when the task masks inputs (``task=cloze``): a batch's ``items`` then
    # hold it where the model reads a learned [MASK] vector (never a candidate); 0: no masking
    mask_item: int = 0

    @property
    def num_event_types(self) -> int:
        return len(self.event_types)

    @property
    def num_categories(self) -> int:
        return len(self.categories)

    @property
    def history_len(self) -> int:
        """H: events older than the encoder inputs that batches carry for the scales."""
        return self.scales.history_len(self.max_len)


def type_transitions(prev_types: np.ndarray, next_types: np.ndarray, num_types: int) -> np.ndarray:
    """[K + 1, K + 1] int64 counts of consecutive event pairs: ``[a, b]`` = pairs of type a then b.

    ``prev_types[i]`` and ``next_types[i]`` are the types (0..K, 0 = unknown) of an event and of the
    next event of the same user: row = the previous event's type, column = the next one's. Row 0 /
    column 0 count pairs with an unknown type (:class:`BehaviourBaselines` ignores column 0).

    Raises:
        ValueError: if the arrays differ in shape or hold a value outside 0..K.
    """
    prev = np.asarray(prev_types, dtype=np.int64).ravel()
    nxt = np.asarray(next_types, dtype=np.int64).ravel()
    if np.shape(prev_types) != np.shape(next_types):
        raise ValueError(
            f"prev_types and next_types must have the same shape, got {np.shape(prev_types)} "
            f"and {np.shape(next_types)}"
        )
    if num_types < 0:
        raise ValueError(f"num_types must be >= 0, got {num_types}")
    for name, values in (("prev_types", prev), ("next_types", nxt)):
        if values.size and (values.min() < 0 or values.max() > num_types):
            raise ValueError(
                f"{name}: types must lie in 0..{num_types}, got values in {values.min()}..{values.max()}"
            )
    size = num_types + 1
    return np.bincount(prev * size + nxt, minlength=size * size).reshape(size, size).astype(np.int64)
