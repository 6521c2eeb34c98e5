"""The next behaviour's head: a linear map of the user state to one logit per event type.

Built only when an objective term reads ``behaviour_logits`` (``objective.behaviour.weight`` > 0;
:mod:`recsys_cli.training.behaviour`): ``model.heads.behaviour_logits`` in the config.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.errors import ConfigError


class BehaviourHead(nn.Module):
    """[B, A, D] states -> [B, A, K] logits of the next event's type (class c = type c + 1)."""

    def __init__(self, spec: DataSpec, dim: int):
        super().__init__()
        num_types = spec.num_event_types
        if num_types < 2:
            raise ConfigError(
                f"objective.behaviour: the data has {num_types} event type(s), so there is no next "
                "behaviour to predict; set objective.behaviour.weight=0 or use data with event types"
            )
        self.linear = nn.Linear(dim, num_types)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z)
