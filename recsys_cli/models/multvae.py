"""Mult-VAE (Liang et al., WWW 2018, "Variational Autoencoders for Collaborative Filtering").

A user is a bag of items ``x`` (binary, over the N items); an encoder gives the posterior
``q(z | x) = N(mu, sigma^2)`` and a decoder the logits of a multinomial over the items::

    x -> L2-normalise -> dropout -> N -> hidden (tanh) -> 2 x latent_dim (mu, logvar)
    z -> latent_dim -> hidden (tanh) -> N logits

(the paper's [N -> 600 -> 200 -> 600 -> N], tanh, dropout 0.5 on the input, Xavier weights and
biases drawn from N(0, 0.001^2), as in the paper's code). It is trained with
``objective.recon=BagReconstruction`` and ``objective.kl=KLTerm`` (``conf/model/multvae.yaml``
sets both and turns the next-item term off: this model gives no user states).

The bag of a case:

- evaluation (the batch has ``seen``): every item of the user's history before the target (the
  paper's fold-in: the test user's known items are encoded, the held-out one is predicted);
- training: the items of the case's ``items`` and ``targets``, i.e. the user's training events
  the case carries (its memory and the events it supervises), each item once (a binary bag).

Training samples ``z = mu + sigma * eps`` (reparameterisation); evaluation uses ``z = mu``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.output import ModelOutput
from recsys_cli.contract.params import Fraction, PositiveInt


def binary_bag(items: torch.Tensor, num_items: int) -> torch.Tensor:
    """[B, K] item ids (0 = padding) -> [B, N + 1] float, 1 where the row has the item (column 0
    always 0)."""
    bag = torch.zeros(items.shape[0], num_items + 1, device=items.device)
    bag.scatter_(1, items, 1.0)
    bag[:, 0] = 0.0
    return bag


class MultVAE(nn.Module):
    """Mult-VAE over the bag of a case's items; ``forward`` returns item scores, not states.

    ``ModelOutput.scores`` [B, N + 1]: the decoder's logits, column 0 (padding) -inf;
    ``aux`` (:attr:`outputs`, what objective.kl and objective.recon read): ``latent_mu``,
    ``latent_logvar`` [B, latent_dim] and ``bag`` [B, N + 1] (the input bag, also the
    reconstruction target).
    """

    requires_training = True
    scale_names: list[str] = []
    # the auxiliary outputs every forward gives
    outputs = frozenset({"latent_mu", "latent_logvar", "bag"})

    def __init__(
        self,
        spec: DataSpec,
        hidden: PositiveInt = 600,
        latent_dim: PositiveInt = 200,
        dropout: Fraction = 0.5,
    ):
        super().__init__()
        self.num_items, self.latent_dim = spec.num_items, latent_dim
        self.input_dropout = nn.Dropout(dropout)
        self.encoder = nn.Linear(self.num_items, hidden)
        self.posterior = nn.Linear(hidden, 2 * latent_dim)  # mu and logvar
        self.decoder = nn.Linear(latent_dim, hidden)
        self.output = nn.Linear(hidden, self.num_items)
        for layer in (self.encoder, self.posterior, self.decoder, self.output):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.trunc_normal_(layer.bias, std=0.001, a=-0.002, b=0.002)

    def bag(self, batch: Batch) -> torch.Tensor:
        """[B, N + 1] binary bag of the case (see the module docstring)."""
        if "seen" in batch:
            return binary_bag(batch["seen"], self.num_items)
        return binary_bag(torch.cat([batch["items"], batch["targets"]], dim=1), self.num_items)

    def forward(self, batch: Batch, keep: torch.Tensor | None = None, last_only: bool = False) -> ModelOutput:
        bag = self.bag(batch)
        # the paper's code: normalise, then dropout (inverted dropout keeps the expected input)
        x = self.input_dropout(F.normalize(bag[:, 1:], dim=1))
        h = torch.tanh(self.encoder(x))
        mu, logvar = self.posterior(h).chunk(2, dim=-1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        logits = self.output(torch.tanh(self.decoder(z)))  # [B, N]
        scores = F.pad(logits, (1, 0), value=float("-inf"))  # [B, N + 1], column 0 = padding
        return ModelOutput(scores=scores, aux={"latent_mu": mu, "latent_logvar": logvar, "bag": bag})

    def refresh_items(self) -> None:
        """Nothing to refresh: the model has no item table."""
        return None

    def parameter_groups(self) -> list[dict]:
        """One optimizer parameter group: every trainable parameter."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]
