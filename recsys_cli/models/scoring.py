"""How a user state and an item vector give a score (``model/scoring=dot|cosine``).

A scoring maps the states [B, A, D] and the item table [N + 1, D] to the pair whose dot product is
the score, so the objective and the full ranking both compute ``states @ item_table.T``.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.contract.params import Range


class DotScoring(nn.Module):
    """score = state . item (the default)."""

    def forward(self, z: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z, table


class CosineScoring(nn.Module):
    """score = cos(state, item) / temperature: both normalised, the state scaled by 1 / temperature
    (learned unless ``learn_temperature=false``; at least 0.01)."""

    def __init__(self, temperature: Annotated[float, Range(min=0.01)] = 0.1, learn_temperature: bool = True):
        super().__init__()
        log_scale = torch.tensor(-math.log(temperature))
        self.log_scale = nn.Parameter(log_scale) if learn_temperature else None
        if not learn_temperature:
            self.register_buffer("fixed_log_scale", log_scale)

    def forward(self, z: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale = self.log_scale if self.log_scale is not None else self.fixed_log_scale
        scale = log_scale.clamp(max=math.log(100.0)).exp()  # a temperature of at least 0.01
        return F.normalize(z, dim=-1) * scale, F.normalize(table, dim=-1)
