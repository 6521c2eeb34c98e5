"""Item representations: the [N + 1, D] item table a model reads its inputs from and scores against.

Chosen by config (``model/item=id``), built with the data spec and the model width; the encoder,
the scales and the training module never know which one is used. Row 0 is the padding item: a
zero vector that no input or candidate uses. ``id`` is a learned vector per item; ``text`` and
``id_text`` (:mod:`recsys_cli.models.text_items`) read the items' texts with a language model.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.params import NonNegative


class ItemRepresentation(nn.Module):
    """Base: ``forward(batch=None) -> [N + 1, D]`` item table (row 0 = padding).

    ``batch`` is the batch being trained on (a representation may recompute the rows of its
    items); ``refresh()`` is called before every training epoch and every evaluation (a
    representation whose table depends on trained weights brings it up to date);
    ``parameter_groups()`` lists parameters that train with settings of their own (e.g. a
    language model's learning rate).
    """

    def __init__(self, spec: DataSpec, dim: int):
        super().__init__()
        self.num_items, self.dim = spec.num_items, dim

    def forward(self, batch: Batch | None = None) -> torch.Tensor:  # pragma: no cover - implemented by each
        raise NotImplementedError

    def refresh(self) -> None:
        """Bring a table that depends on trained weights up to date (nothing to do by default)."""

    def parameter_groups(self) -> list[dict]:
        """Optimizer parameter groups with settings of their own (none by default)."""
        return []


class IdEmbedding(ItemRepresentation):
    """A learned vector per item id, drawn N(0, ``init_std``^2) (``model.init_std``, 0.02 as in
    BERT, RecBole and the SASRec+ recipe); ``init_std=None``: std ``D ** -0.5`` per coordinate
    (unit-norm rows, the initialisation before 2026-12-06).

    The table is both the input vectors (times ``sqrt(D)``) and the output layer. Started at unit
    norm, Adam's steps of ~lr per coordinate move it slowly relative to its size, and on
    MovieLens-1M training sat on the popularity level for 10+ epochs; at 0.02 it left it after 3
    (docs/results/ml1m-plateau.md).
    """

    def __init__(self, spec: DataSpec, dim: int, init_std: NonNegative | None = 0.02):
        super().__init__(spec, dim)
        self.embedding = nn.Embedding(spec.num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=dim**-0.5 if init_std is None else init_std)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, batch: Batch | None = None) -> torch.Tensor:
        return self.embedding.weight
