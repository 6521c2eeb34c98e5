"""How ``model/item=id_text`` fuses an item's id vector and its projected text vector
(``model/item/fusion=add|concat|gate``), like every other fusion a ``_target_``.

A fusion maps the id part ``ids`` [N + 1, D], the text part ``text`` [N + 1, D] and ``keep``
[N + 1, 1] (1 where an item's id part counts, 0 where it was dropped: items without training
events, DropoutNet's dropped ids) to the item table [N + 1, D]; ``ids`` already has the dropped
rows zeroed. Row 0 (padding) stays zero.
"""

from __future__ import annotations

import torch
from torch import nn


def scaled_linear(linear: nn.Linear, fan_in: int, dim: int) -> nn.Linear:
    """Weights so that unit-variance inputs give outputs of per-coordinate std ``dim ** -0.5``."""
    nn.init.normal_(linear.weight, std=(fan_in * dim) ** -0.5)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


class IdTextFusion(nn.Module):
    """Base: ``forward(ids, text, keep) -> [N + 1, D]`` item table."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, ids: torch.Tensor, text: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class AddIdText(IdTextFusion):
    """ids + text: an item whose id part is dropped is its text vector."""

    def forward(self, ids: torch.Tensor, text: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return ids + text


class ConcatIdText(IdTextFusion):
    """A linear map of [ids, text] (inputs of std ``D ** -0.5`` keep it)."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.linear = scaled_linear(nn.Linear(2 * dim, dim), 2 * dim, dim)
        nn.init.normal_(self.linear.weight, std=(2 * dim) ** -0.5)

    def forward(self, ids: torch.Tensor, text: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        mixed = self.linear(torch.cat([ids, text], dim=-1))
        return mixed * (torch.arange(mixed.shape[0], device=mixed.device) > 0).unsqueeze(-1)


class GateIdText(IdTextFusion):
    """Per-dimension sigmoid gates of [ids, text]: ``g * ids + (1 - g) * text``; the gates start at
    0.5 (the mean of both), and an item whose id part is dropped is its text vector."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.linear = nn.Linear(2 * dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, ids: torch.Tensor, text: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.linear(torch.cat([ids, text], dim=-1))) * keep
        return gate * ids + (1 - gate) * text
