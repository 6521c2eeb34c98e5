"""The prepared form of a dataset and the settings that produce it.

:class:`PreparationConfig` holds ``data.preparation`` (dedup, k-core thresholds, a cap on events
per user); :class:`PreparedData` is what :func:`recsys_cli.data.prepare.prepare_events` returns and
:mod:`recsys_cli.data.prepared_cache` stores.

The prepared form is a CSR layout over users: ``offsets[u]:offsets[u+1]`` are user ``u``'s
events in time order in the flat arrays ``items``, ``times``, ``event_types`` and ``categories``,
and in one array per context column (``context[name]``, the columns ``data.columns.context``
names). Ids are contiguous and 0 is reserved for padding (items, event types, categories, context
values). Batches are
gathered from these arrays by index arithmetic: no per-prefix copies of sequences exist anywhere.
A change of this layout needs a new ``PREPARE_VERSION`` in :mod:`recsys_cli.data.prepared_cache`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recsys_cli.errors import ConfigError


@dataclass
class PreparationConfig:
    """How raw events become training data (``data.preparation`` in the config)."""

    dedup: bool = True
    min_user_events: int = 2
    min_item_events: int = 1
    max_events_per_user: int | None = None

    def __post_init__(self) -> None:
        if self.min_user_events < 2:
            raise ConfigError(
                f"data.preparation.min_user_events={self.min_user_events}: a user needs at least 2 "
                "events (one input, one target); use 2 or more"
            )
        if self.min_item_events < 1:
            raise ConfigError(
                f"data.preparation.min_item_events={self.min_item_events}: use 1 (no filter) or more"
            )
        if self.max_events_per_user is not None and self.max_events_per_user < 2:
            raise ConfigError(
                "data.preparation.max_events_per_user must be null (keep all) or at least 2"
            )


@dataclass
class PreparedData:
    """Indexed, sorted events in CSR layout plus vocabularies and statistics."""

    offsets: np.ndarray  # [U+1] int64
    items: np.ndarray  # [E] int64, 1..num_items
    times: np.ndarray  # [E] int64, unix seconds (or per-user position when has_time is False)
    event_types: np.ndarray  # [E] int64, 0 = unknown, 1..num_event_types
    categories: np.ndarray  # [E] int64, 0 = unknown
    item_vocab: list  # raw item id of item index i+1
    user_vocab: list  # raw user id of user index u
    event_type_vocab: list[str]  # name of event type index i+1
    category_vocab: list[str]  # name of category index i+1
    has_time: bool
    item_titles: list[str | None] | None = None
    # the items' text fields by name (title, category, year, genres, brand, description...): each
    # a list over item indices 1..N (position i - 1), None where an item has no value
    item_fields: dict[str, list[str | None]] = field(default_factory=dict)
    # the context columns (data.columns.context) in config order: [E] int64 codes per name, 0 =
    # missing, 1..V = context_vocab[name][code - 1] (sorted values); every reordering or filtering
    # of the event arrays applies to these too
    context: dict[str, np.ndarray] = field(default_factory=dict)
    context_vocab: dict[str, list[str]] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_items(self) -> int:
        return len(self.item_vocab)

    @property
    def num_events(self) -> int:
        return len(self.items)

    @property
    def num_event_types(self) -> int:
        return len(self.event_type_vocab)

    @property
    def num_categories(self) -> int:
        return len(self.category_vocab)

    @property
    def user_of_event(self) -> np.ndarray:
        """[E] user index of every event."""
        return np.repeat(np.arange(self.num_users), np.diff(self.offsets))
