"""A variational user latent (``model/latent=vae``): the fused user state becomes a Gaussian.

The state ``z`` at each position is mapped to a mean and a log-variance; training reads a sample
(the reparameterisation trick), evaluation the mean. The objective gains a ``kl`` term (annealed
from 0 to ``beta``) and a ``recon`` term (the multinomial likelihood of the next events' items,
SVAE-style; :mod:`recsys_cli.training.latent_terms`), which ``model/latent=vae`` turns on.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_cli.contract.params import PositiveInt


class VariationalLatent(nn.Module):
    """[.., D] state -> ([.., D] sample or mean, mean, log-variance); the latent has ``dim`` too.

    The mean starts as the identity (the state itself) and the log-variance at ``init_logvar``
    (small noise): training starts where the plain model does and the KL term widens it.
    """

    def __init__(self, dim: PositiveInt, init_logvar: float = -4.0):
        super().__init__()
        self.mean = nn.Linear(dim, dim)
        self.logvar = nn.Linear(dim, dim)
        with torch.no_grad():
            self.mean.weight.copy_(torch.eye(dim))
            self.mean.bias.zero_()
            self.logvar.weight.zero_()
            self.logvar.bias.fill_(init_logvar)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.mean(z), self.logvar(z).clamp(-10.0, 10.0)
        if not self.training:
            return mu, mu, logvar
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar), mu, logvar
