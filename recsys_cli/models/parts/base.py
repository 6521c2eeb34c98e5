"""What a part of the sequence model is, and how the recommender builds a list of them.

A part is built from its config node (a ``_partial_`` ``_target_``) with the data spec and the
model width, ``factory(spec=spec, dim=dim)``, and has up to two hooks:

- :meth:`ModelPart.embed`: a vector added to every event's input vector before the encoder;
- :meth:`ModelPart.forward`: the user states of the last A positions [B, A, D] in, changed
  states out; it may add named outputs for the objective to ``aux`` (``ModelOutput.aux``), and
  says which in :attr:`ModelPart.provides`.

A head (``model.heads``, keyed by the one ``ModelOutput.aux`` key it gives) is a module
``forward(z [B, A, D]) -> [B, A, ...]`` built only when an objective term reads that key.

A part whose settings ask for nothing (``model.user_embedding=false``, ``model.context=[]``) builds
no module and draws no random number: switching it off leaves every other weight as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec

# a part's config node, built: called with the data spec and the model width
PartFactory = Callable[..., nn.Module]


class ModelPart(nn.Module):
    """One job in the sequence model (see the module docstring); both hooks do nothing here."""

    # the ModelOutput.aux keys :meth:`forward` writes
    provides: frozenset[str] = frozenset()

    def embed(self, batch: Batch) -> torch.Tensor | None:
        """[B, T, D] added to the input vector of every event of ``batch`` (None: nothing)."""
        return None

    def forward(self, z: torch.Tensor, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        """User states [B, A, D] of the last A positions of ``batch`` -> [B, A, D]."""
        return z


def build_parts(factories: Mapping[str, PartFactory], spec: DataSpec, dim: int) -> nn.ModuleDict:
    """Every part of ``factories`` (name -> factory), built in order with ``spec`` and ``dim``."""
    return nn.ModuleDict({str(name): factory(spec=spec, dim=dim) for name, factory in factories.items()})
