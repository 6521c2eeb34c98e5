"""A variational user latent (``model/latent=vae``): the fused user state becomes a Gaussian.

The state ``z`` at each position is mapped to a mean and a log-variance; training reads a sample
(the reparameterisation trick), evaluation the mean. The objective gains a ``kl`` term (annealed
from 0 to ``beta``) and a ``recon`` term (the multinomial likelihood of the next events' items,
SVAE-style; :mod:`recsys_cli.training.latent_terms`), which ``model/latent=vae`` turns on.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.params import PositiveInt
from recsys_cli.models.parts.base import ModelPart


class VariationalLatent(ModelPart):
    """[B, A, D] states -> a sample (training) or the mean (evaluation); the latent has ``dim`` too.

    Writes ``aux["latent_mu"]``, ``aux["latent_logvar"]`` [B, A, D] and ``aux["latent_mask"]``
    [B, A] (the supervised positions, the rows the KL term counts). The mean starts as the
    identity (the state itself) and the log-variance at ``init_logvar`` (small noise): training
    starts where the plain model does and the KL term widens it.
    """

    provides = frozenset({"latent_mu", "latent_logvar", "latent_mask"})

    def __init__(self, spec: DataSpec, dim: PositiveInt, init_logvar: float = -4.0):
        super().__init__()
        self.mean = nn.Linear(dim, dim)
        self.logvar = nn.Linear(dim, dim)
        with torch.no_grad():
            self.mean.weight.copy_(torch.eye(dim))
            self.mean.bias.zero_()
            self.logvar.weight.zero_()
            self.logvar.bias.fill_(init_logvar)

    def forward(self, z: torch.Tensor, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        mu, logvar = self.mean(z), self.logvar(z).clamp(-10.0, 10.0)
        aux["latent_mu"], aux["latent_logvar"] = mu, logvar
        if "targets" in batch:  # the supervised positions (a query has none)
            aux["latent_mask"] = batch["targets"][:, -z.shape[1] :] > 0
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
