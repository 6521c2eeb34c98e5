"""Item representations: the [N + 1, D] item table a model reads its inputs from and scores against.

Chosen by config (``model/item=id``), built with the data spec and the model width; the encoder,
the scales and the training module never know which one is used. Row 0 is the padding item: a
zero vector that no input or candidate uses. ``id`` is a learned vector per item; representations
that read item text or categories plug in here and return the same table.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_cli.contract.data_spec import DataSpec


class ItemRepresentation(nn.Module):
    """Base: ``forward() -> [N + 1, D]`` item table (row 0 = padding)."""

    def __init__(self, spec: DataSpec, dim: int):
        super().__init__()
        self.num_items, self.dim = spec.num_items, dim

    def forward(self) -> torch.Tensor:  # pragma: no cover - every representation implements it
        raise NotImplementedError


class IdEmbedding(ItemRepresentation):
    """A learned vector per item id (per-coordinate std ``D ** -0.5``: about unit norm)."""

    def __init__(self, spec: DataSpec, dim: int):
        super().__init__(spec, dim)
        self.embedding = nn.Embedding(spec.num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self) -> torch.Tensor:
        return self.embedding.weight
