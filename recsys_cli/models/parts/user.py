"""A learned vector per user added to the user state (``model.user_embedding=true``).

Users unknown to training (no training target: new users of a temporal split) share row 0, a
learned unknown-user vector. Training learns it by replacing the user with it in a
``model.user_dropout`` share of the cases, drawn anew at every step.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.params import Fraction
from recsys_cli.models.parts.base import ModelPart


class UserVector(ModelPart):
    """Adds ``embedding(user)`` [B, 1, D] to the states; ``use=false``: builds nothing, adds nothing."""

    def __init__(self, spec: DataSpec, dim: int, use: bool = False, dropout: Fraction = 0.1):
        super().__init__()
        self.dropout = dropout
        self.embedding: nn.Embedding | None = None
        if use:  # row 0: the unknown user (learned, not padding)
            self.embedding = nn.Embedding(spec.num_users + 1, dim)
            nn.init.normal_(self.embedding.weight, std=dim**-0.5)

    def forward(self, z: torch.Tensor, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.embedding is None:
            return z
        users = batch["users"]  # [B]: user index + 1, 0 for users unknown to training
        if self.training and self.dropout > 0:
            users = users * (torch.rand(users.shape, device=users.device) >= self.dropout)
        return z + self.embedding(users).unsqueeze(1)
