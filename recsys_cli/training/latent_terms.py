"""Objective terms of models with a variational latent: the KL term and the reconstructions.

A variational model (Mult-VAE, ``model=multvae``; a sequence model with a variational latent,
``model/latent=vae``) puts its approximate posterior ``N(mu, sigma^2)`` in ``ModelOutput.aux``
(``latent_mu``, ``latent_logvar``; optionally ``latent_mask``). Its training objective is the
negative ELBO with an annealed KL weight (Liang et al., WWW 2018, "Variational Autoencoders for
Collaborative Filtering"; Sachdeva et al., WSDM 2019, "Sequential Variational Autoencoders for
Collaborative Filtering")::

    objective.recon   -log p(x | z)                   (BagReconstruction or WindowReconstruction)
    objective.kl      kl_weight(step) * KL(q(z | x) || N(0, I))

Held-out items (``data.cold_items``) are never candidates of a reconstruction, as in
:mod:`recsys_cli.training.losses`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.output import ModelOutput
from recsys_cli.contract.params import NonNegative, NonNegativeInt, PositiveInt
from recsys_cli.errors import ConfigError
from recsys_cli.training.losses import NextItemTerm
from recsys_cli.training.objective import ObjectiveTerm


def kl_weight(step: int, beta: float, anneal_steps: int) -> float:
    """The KL weight at optimizer step ``step``: rises linearly from 0 at step 0 to ``beta`` at
    ``anneal_steps``, then stays at ``beta``; ``anneal_steps=0`` gives ``beta`` from the start.

    (Mult-VAE's code anneals ``min(cap, step / total_steps)``: the weight reaches ``cap`` at
    ``cap * total_steps``; that schedule is this one with ``beta=cap`` and
    ``anneal_steps=cap * total_steps``.)
    """
    if anneal_steps <= 0:
        return float(beta)
    return float(beta) * min(max(step, 0) / anneal_steps, 1.0)


class KLTerm(ObjectiveTerm):
    """KL divergence of the model's posterior ``N(mu, sigma^2)`` from the prior ``N(0, I)``,
    weighted by the annealed :func:`kl_weight` (``objective.kl``).

    Reads ``aux["latent_mu"]`` and ``aux["latent_logvar"]`` [..., Dz] and, when given,
    ``aux["latent_mask"]`` (bool over the leading dims: the rows that count). The raw KL is the mean
    over the counted rows of ``0.5 * sum_d (exp(logvar) + mu^2 - 1 - logvar)``.

    ``beta_t = kl_weight(step, beta, anneal_steps)``; the defaults (0.2, 40,000 steps) are
    Mult-VAE's schedule (its code: ``min(0.2, step / 200,000)``). The term's value is
    ``beta_t * KL``: what enters the loss (times ``weight``; keep ``weight=1`` and set ``beta``).
    What is logged (per epoch, each the mean over the epoch's batches, as for every term):

    - ``train/kl``: the term's value, ``beta_t * KL`` (what the KL adds to the loss);
    - ``train/kl_raw``: the raw KL (nats per row), the quantity to watch for posterior collapse;
    - ``train/beta``: ``beta_t``, the KL weight of the step.
    """

    requires = frozenset({"latent_mu", "latent_logvar"})

    def __init__(self, weight: NonNegative = 1.0, beta: NonNegative = 0.2, anneal_steps: NonNegativeInt = 40_000):
        super().__init__(weight)
        self.beta, self.anneal_steps = float(beta), int(anneal_steps)

    def missing_outputs(self, name: str, missing: set[str], model: str) -> ConfigError:
        return ConfigError(
            f"objective.{name} needs a model with a variational latent (model/latent=vae or "
            f"model=multvae); this model's output has no {' / '.join(sorted(missing))}: remove "
            f"objective.{name} or choose such a model"
        )

    def __call__(self, output: ModelOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        missing = set(self.requires - set(output.aux))
        if missing:
            raise self.missing_outputs("kl", missing, "")
        mu, logvar = output.aux["latent_mu"].float(), output.aux["latent_logvar"].float()
        kl = 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(-1)  # [...]
        mask = output.aux.get("latent_mask")
        if mask is not None:
            kl = kl[mask.bool()]
        raw = kl.mean() if kl.numel() else kl.sum()  # no counted row: 0 (still part of the graph)
        beta = kl_weight(self.step, self.beta, self.anneal_steps)
        return beta * raw, {"kl_raw": raw.detach(), "beta": raw.new_tensor(beta)}


class WindowReconstruction(NextItemTerm):
    """Multinomial log-likelihood of the next ``window`` items after every supervised position
    (SVAE's "next k" objective; ``objective.recon`` of a sequence model with a variational latent).

    For position t of a row, the window is ``targets[t], ..., targets[t + window - 1]``: the items
    of those that are > 0 (positions past the row's end do not count; an item twice in the window
    counts twice). With ``p_t = softmax(states[t] @ item_table[1:].T)`` over the candidates, the
    value is the mean over the supervised positions (``targets[t] > 0``) of
    ``-sum_{items j of the window} log p_t(j) / (number of items in the window)``: with
    ``window=1`` exactly :class:`~recsys_cli.training.losses.FullSoftmaxCE`.

    ``window=4`` by default: the ``next_k`` of SVAE's released code (Sachdeva et al., WSDM 2019,
    whose loss is also divided by the number of items in the window). Logits are built in chunks
    of ``chunk_size`` positions, so memory stays at chunk x N.
    """

    def __init__(self, weight: NonNegative = 1.0, window: PositiveInt = 4, chunk_size: PositiveInt = 4096):
        super().__init__(weight)
        if window < 1:
            raise ConfigError(f"objective.recon.window={window}: use an integer >= 1")
        self.window, self.chunk_size = int(window), int(chunk_size)

    def __call__(self, output: ModelOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if output.states is None or output.item_table is None:
            raise ConfigError(
                "objective.recon (WindowReconstruction) needs a model that gives user states and an item "
                "table (model=sequential); for model=multvae use BagReconstruction"
            )
        targets = batch["targets"]  # [B, L]
        sel = targets > 0
        # [B, L, window]: the targets of positions t .. t + window - 1 (0 past the row's end)
        padded = F.pad(targets, (0, self.window - 1))
        windows = padded.unfold(1, self.window, 1)
        return self.loss_windows(output.states[sel], windows[sel], output.item_table), {}

    def loss_windows(self, z: torch.Tensor, windows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """z [M, D], windows [M, window] (item ids, 0 = none), items [N + 1, D] -> the mean loss."""
        candidates = items[1:]  # [N, D]
        excluded = self._excluded(z.device)
        total = z.new_zeros((), dtype=torch.float32)
        for i in range(0, z.shape[0], self.chunk_size):
            logits = z[i : i + self.chunk_size] @ candidates.T  # [m, D] @ [D, N] -> [m, N]
            if excluded is not None:
                logits = logits.masked_fill(excluded[1:], float("-inf"))
            logp = F.log_softmax(logits.float(), dim=-1)
            w = windows[i : i + self.chunk_size]  # [m, window]
            valid = w > 0
            picked = logp.gather(1, (w - 1).clamp(min=0))  # [m, window]
            nll = -torch.where(valid, picked, torch.zeros_like(picked)).sum(1)
            total = total + (nll / valid.sum(1).clamp(min=1)).sum()
        return total / max(z.shape[0], 1)

    def loss(self, z: torch.Tensor, targets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The window-1 case on already gathered targets [M] (the NextItemTerm interface)."""
        return self.loss_windows(z, targets[:, None], items)


class BagReconstruction(ObjectiveTerm):
    """Mult-VAE's multinomial log-likelihood of the user's bag of items (``objective.recon`` of
    ``model=multvae``; Liang et al., WWW 2018, eq. 2).

    Reads ``output.scores`` [B, N + 1] (logits; column 0, padding, is ignored) and
    ``aux["bag"]`` [B, N + 1] (the counts or 0/1 of the items to reconstruct). The value is the mean
    over the rows with a non-empty bag of ``-sum_j bag_j * log_softmax(logits)_j``, the softmax over
    the items 1..N that are candidates. As in the paper (and its code) the sum over the bag is not
    divided by the bag's size: a user with more items weighs more. Items held out of training are
    neither candidates nor counted in the bag.
    """

    requires = frozenset({"bag"})
    excluded: torch.Tensor | None = None  # [N + 1] bool: items that are never candidates
    # the held-out items, as the next-item terms find them
    bind = NextItemTerm.bind
    _excluded = NextItemTerm._excluded

    def __init__(self, weight: NonNegative = 1.0):
        super().__init__(weight)

    def __call__(self, output: ModelOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if output.scores is None or "bag" not in output.aux:
            raise ConfigError(
                "objective.recon (BagReconstruction) needs a model that scores a bag of items (model=multvae); "
                "this model's output has no scores or no aux['bag']"
            )
        logits, bag = output.scores[:, 1:].float(), output.aux["bag"][:, 1:].float()  # [B, N]
        excluded = self._excluded(logits.device)
        if excluded is not None:
            logits = logits.masked_fill(excluded[1:], float("-inf"))
            bag = bag.masked_fill(excluded[1:], 0.0)
        logp = F.log_softmax(logits, dim=-1)
        counted = bag > 0
        nll = -torch.where(counted, bag * logp, torch.zeros_like(logp)).sum(1)  # [B]
        rows = counted.any(1)
        return (nll[rows].mean() if rows.any() else nll.sum() * 0.0), {}
