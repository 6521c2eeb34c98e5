"""Side features of each event added to its input vector: its behaviour type, its item's category.

``model.use_event_types`` / ``model.use_categories`` switch them; naming ``event_type`` or
``category`` in ``model.context`` switches them too (the same feature under another name), and then
the data must have the column. Both are ``model.inputs`` parts, built before the encoder; their
tables start at ``model.init_std``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.params import NonNegative
from recsys_cli.errors import ConfigError
from recsys_cli.models.parts.base import ModelPart


def side_table(rows: int, dim: int, std: float | None = 0.02) -> nn.Embedding:
    """An embedding table of an event's side feature (type, category, hour, ...), added to the
    item's input vector; row 0 (padding or unknown) is a zero vector.

    Vectors start at ``std`` per coordinate (``model.init_std``), the scale of an item vector
    before the recommender multiplies item inputs by ``sqrt(D)``: a side feature starts at
    ``1 / sqrt(D)`` of an item's input. ``nn.Embedding``'s own N(0, 1) would make, say, the event
    type far larger than the item: with few distinct types it then dominates every input and the
    Transformer sat on the popularity plateau for an extra epoch. ``std=None``: ``D ** -0.5``, the
    scale of the unit-norm item rows used before 2026-12-06.
    """
    table = nn.Embedding(rows, dim, padding_idx=0)
    nn.init.normal_(table.weight, std=dim**-0.5 if std is None else std)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


class SideFeature(ModelPart):
    """Adds ``table(batch[field])`` to every event's vector (values past the table: row 0)."""

    field: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.table: nn.Embedding | None = None

    def embed(self, batch: Batch) -> torch.Tensor | None:
        if self.table is None:
            return None
        return self.table(batch[self.field].clamp(max=self.table.num_embeddings - 1))


class EventTypes(SideFeature):
    """The event's behaviour type (view / cart / buy ...); one type says nothing about an event, so
    data with a single type gets no table (it would only add a constant)."""

    field = "event_types"

    def __init__(
        self, spec: DataSpec, dim: int, use: bool = True, context: Sequence[str] = (), init_std: NonNegative | None = 0.02
    ):
        super().__init__()
        asked = "event_type" in context
        if asked and not spec.num_event_types:
            raise ConfigError(
                "model.context has event_type, but the data has no event types (no 'event_type' "
                "column): remove it from model.context or use data with behaviour types"
            )
        if (use or asked) and spec.num_event_types > 1:
            self.table = side_table(spec.num_event_types + 1, dim, init_std)


class Categories(SideFeature):
    """The category of the event's item: a window's bag then holds the window's category mix
    (0 = unknown category, a zero vector)."""

    field = "categories"

    def __init__(
        self, spec: DataSpec, dim: int, use: bool = False, context: Sequence[str] = (), init_std: NonNegative | None = 0.02
    ):
        super().__init__()
        use = use or "category" in context
        if use and not spec.num_categories:
            raise ConfigError(
                "model.use_categories=true, but the data has no item categories (no 'category' "
                "column): set model.use_categories=false or give the events or items a category"
            )
        if use:
            self.table = side_table(spec.num_categories + 1, dim, init_std)
