"""Next-item objective terms: the user state at every supervised position scores the next item.

Each term gathers the M supervised positions of the batch (``targets > 0``) and computes its loss
from the states ``z`` [M, D], their targets [M] (item ids 1..N) and the item table [N + 1, D]
(row 0 = padding, never a candidate). Chosen by ``objective/next_item=full_ce|sampled_softmax|bce``.

Items held out of training (``data.cold_items``) are not candidates either: in the cold-start
protocol they do not exist yet when the model trains, so no term pushes their scores down (as
negatives they would teach a text model to avoid the text of exactly the items it is tested on).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.output import ModelOutput
from recsys_cli.contract.params import NonNegative, PositiveInt
from recsys_cli.errors import ConfigError
from recsys_cli.training.exact_ce import FusedCrossEntropy, compute_dtype, streaming_cross_entropy
from recsys_cli.training.objective import ObjectiveTerm


class NextItemTerm(ObjectiveTerm):
    """Base of the next-item losses: subclasses implement :meth:`loss`."""

    excluded: torch.Tensor | None = None  # [N + 1] bool: items that are never candidates

    def bind(self, spec: DataSpec) -> None:
        held = spec.held_out_items
        if held is not None and len(held):
            self.excluded = torch.zeros(spec.num_items + 1, dtype=torch.bool)
            self.excluded[torch.as_tensor(held, dtype=torch.long)] = True

    def _excluded(self, device: torch.device) -> torch.Tensor | None:
        if self.excluded is not None and self.excluded.device != device:
            self.excluded = self.excluded.to(device)
        return self.excluded

    def __call__(self, output: ModelOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if output.states is None or output.item_table is None:
            raise ConfigError(
                "objective.next_item reads user states and an item table, which this model does not "
                "give (it scores directly): set objective.next_item.weight=0"
            )
        targets = batch["targets"]  # [B, L]
        sel = targets > 0
        return self.loss(output.states[sel], targets[sel], output.item_table), {}

    def loss(self, z: torch.Tensor, targets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """z [M, D], targets [M], items [N + 1, D] -> the mean loss over the M positions."""
        raise NotImplementedError


class FullSoftmaxCE(NextItemTerm):
    """Cross-entropy over the whole catalogue (SASRec+ / "full CE"): the default.

    Logits are built in chunks of ``chunk_size`` positions. A catalogue of at most
    ``item_chunk_size`` items takes one chunk of items: the softmax [M, N] is the only matrix of
    that size kept for the backward (:class:`~recsys_cli.training.exact_ce.FusedCrossEntropy`). A larger catalogue
    streams over chunks of ``item_chunk_size`` items (:func:`streaming_cross_entropy`: the same
    loss, exact, but memory [chunk_size, item_chunk_size] in the forward and in the backward).
    """

    def __init__(self, weight: NonNegative = 1.0, chunk_size: PositiveInt = 4096, item_chunk_size: PositiveInt = 8192):
        super().__init__(weight)
        self.chunk_size = chunk_size
        self.item_chunk_size = item_chunk_size

    def loss(self, z: torch.Tensor, targets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        candidates = items[1:]  # [N, D]
        excluded = self._excluded(z.device)
        if candidates.shape[0] > self.item_chunk_size:
            return streaming_cross_entropy(z, items, targets, excluded, self.item_chunk_size, self.chunk_size)
        return FusedCrossEntropy.apply(z, items, targets, excluded, int(self.chunk_size))


class SampledSoftmax(NextItemTerm):
    """Softmax over the target and ``num_negatives`` (K) sampled items shared by the batch.

    Negatives equal to a row's target are masked out (no accidental hits); so are held-out items.

    ``sampling``:

    - ``uniform`` (default): K draws of ``randint(1, N + 1)`` (q(j) = 1 / N). Held-out items can be
      drawn and are then masked (-inf: no gradient), which keeps the draws of every earlier run;
    - ``popularity``: K draws with replacement, q(j) proportional to
      ``max(item_train_counts[j], 1) ** alpha`` (``alpha=0.75`` as word2vec). Items with no
      training event get the weight of an item with one (they exist in training, so full CE pushes
      their scores down too; never drawing them would leave their vectors untrained). Held-out items
      and row 0 have q = 0: never drawn. Needs ``bind(spec)`` with ``item_train_counts``.

    ``in_batch``: the targets of all M supervised positions of the batch are negatives of every row
    as well (mixed negative sampling, Yang et al., WWW 2020); those equal to the row's target
    (the row itself included) are masked. A target that occurs n times in the batch is one column
    with n added to its exp-logit (``+ log n``): the same loss as n columns, in [M, unique] memory.
    Their probability per in-batch draw is approximated by the training frequency
    p(j) = max(item_train_counts[j], 1) / sum (deterministic, and what Yi et al.'s streaming
    estimate converges to); needs ``bind(spec)`` with ``item_train_counts``.

    ``logq`` (sampled softmax of Jean et al., 2015 / Yi et al., RecSys 2019): every logit in the
    softmax -- the positive's, every sampled negative's, every in-batch negative's -- is
    corrected by ``- log E[j]``, E[j] the expected number of copies of item j among the candidates:
    ``E[j] = K q(j)``, plus ``M p(j)`` with ``in_batch`` (for two samplers this is the balance-
    heuristic importance weight, unbiased for the full softmax normaliser; with one sampler it is
    the textbook ``log(K q(j))``). With ``sampling=uniform`` and no in-batch negatives E[j] = K / N
    for every item: a constant shift that cancels in the softmax, so it is not applied at all and
    the values stay bit-identical to runs without it.
    """

    def __init__(
        self,
        weight: NonNegative = 1.0,
        num_negatives: PositiveInt = 256,
        seed: int = 0,
        sampling: Literal["uniform", "popularity"] = "uniform",
        alpha: NonNegative = 0.75,
        logq: bool = True,
        in_batch: bool = False,
    ):
        super().__init__(weight)
        if num_negatives < 1:
            raise ConfigError(f"objective.next_item.num_negatives={num_negatives}: use at least 1")
        if sampling not in ("uniform", "popularity"):
            raise ConfigError(f"objective.next_item.sampling={sampling}: use uniform or popularity")
        self.num_negatives = num_negatives
        self.generator = torch.Generator().manual_seed(seed)
        self.sampling, self.alpha, self.logq, self.in_batch = sampling, float(alpha), bool(logq), bool(in_batch)
        self.cdf: torch.Tensor | None = None  # [N + 1] float64 cumulative weights (popularity)
        self.q: torch.Tensor | None = None  # [N + 1] float64: probability of one draw (popularity)
        self.p_batch: torch.Tensor | None = None  # [N + 1] float64: probability of one in-batch target
        self._last = 0
        self._device_cache: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    def bind(self, spec: DataSpec) -> None:
        super().bind(spec)
        if self.sampling == "uniform" and not self.in_batch:
            return
        counts = spec.item_train_counts
        if counts is None:
            raise ConfigError(
                f"objective.next_item: sampling={self.sampling} in_batch={self.in_batch} needs the items' "
                "training counts, which this data does not give; use sampling=uniform in_batch=false"
            )
        counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
        if counts.shape != (spec.num_items + 1,):
            raise ConfigError(f"item_train_counts has shape {tuple(counts.shape)}, expected [{spec.num_items + 1}]")
        base = counts.clamp(min=1.0)
        base[0] = 0.0
        if self.excluded is not None:
            base[self.excluded] = 0.0
        self.p_batch = base / base.sum()
        weights = base**self.alpha
        weights[base == 0] = 0.0  # 0 ** 0 = 1 for alpha = 0: padding and held-out stay at 0
        self.cdf = torch.cumsum(weights, 0)
        self.q = weights / self.cdf[-1]
        self._last = int(torch.nonzero(weights).max())  # the last item that can be drawn
        self._device_cache = {}

    def sample_negatives(self, n: int) -> torch.Tensor:
        """The K negative item ids [K] (CPU) of one batch, from ``self.generator``."""
        if self.sampling == "uniform":
            return torch.randint(1, n + 1, (self.num_negatives,), generator=self.generator)
        if self.cdf is None:
            raise ConfigError("objective.next_item.sampling=popularity: call bind(spec) before the loss")
        if self.cdf.shape[0] != n + 1:
            raise ConfigError(f"objective.next_item: bound to {self.cdf.shape[0] - 1} items, the item table has {n}")
        total = self.cdf[-1]
        u = torch.rand(self.num_negatives, generator=self.generator, dtype=torch.float64) * total
        # the first item whose cumulative weight exceeds u: items of weight 0 are never chosen
        return torch.searchsorted(self.cdf, u, right=True).clamp(max=self._last)

    def _on(self, name: str, value: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (name, device, dtype)
        if key not in self._device_cache:
            self._device_cache[key] = value.to(device=device, dtype=dtype)
        return self._device_cache[key]

    def _log_expected(self, ids: torch.Tensor, n: int, m: int, dtype: torch.dtype) -> torch.Tensor:
        """log E[copies of each item of ``ids`` among the candidates] (see the class docstring)."""
        k = self.num_negatives
        if self.sampling == "uniform":
            expected = torch.full(ids.shape, k / n, dtype=dtype, device=ids.device)
        else:
            assert self.q is not None
            expected = k * self._on("q", self.q, ids.device, dtype)[ids]
        if self.in_batch:
            assert self.p_batch is not None
            expected = expected + m * self._on("p", self.p_batch, ids.device, dtype)[ids]
        return torch.log(expected.clamp(min=torch.finfo(dtype).tiny))

    def loss(self, z: torch.Tensor, targets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        n = items.shape[0] - 1
        neg = self.sample_negatives(n).to(z.device)
        pos_logit = (z * items[targets]).sum(-1, keepdim=True)  # [M, 1]
        neg_logit = z @ items[neg].T  # [M, K]
        neg_logit = neg_logit.masked_fill(neg[None, :] == targets[:, None], float("-inf"))
        excluded = self._excluded(z.device)
        if excluded is not None:
            neg_logit = neg_logit.masked_fill(excluded[neg][None, :], float("-inf"))
        correct = self.logq and (self.sampling != "uniform" or self.in_batch)
        if not correct and not self.in_batch:  # the original computation, bit for bit
            logits = torch.cat([pos_logit, neg_logit], dim=1).float()
            return F.cross_entropy(logits, torch.zeros_like(targets))
        dtype = compute_dtype(z, items)
        parts = [pos_logit.to(dtype), neg_logit.to(dtype)]
        if self.in_batch:
            if self.p_batch is None:
                raise ConfigError("objective.next_item.in_batch=true: call bind(spec) before the loss")
            uniq, mult = torch.unique(targets, return_counts=True)  # [U]
            batch_logit = (z @ items[uniq].T).to(dtype) + torch.log(mult.to(dtype))[None, :]  # [M, U]
            hit = uniq[None, :] == targets[:, None]
            if excluded is not None:
                hit = hit | excluded[uniq][None, :]
            parts.append(batch_logit.masked_fill(hit, float("-inf")))
        if correct:
            m = targets.shape[0]
            parts[0] = parts[0] - self._log_expected(targets, n, m, dtype)[:, None]
            parts[1] = parts[1] - self._log_expected(neg, n, m, dtype)[None, :]
            if self.in_batch:
                parts[2] = parts[2] - self._log_expected(uniq, n, m, dtype)[None, :]
        logits = torch.cat(parts, dim=1)
        return F.cross_entropy(logits, torch.zeros_like(targets))


class BCEOneNegative(NextItemTerm):
    """Binary cross-entropy with one uniformly sampled negative per position (original SASRec)."""

    def __init__(self, weight: NonNegative = 1.0, seed: int = 0):
        super().__init__(weight)
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self, z: torch.Tensor, targets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        n = items.shape[0] - 1
        neg = torch.randint(1, n + 1, targets.shape, generator=self.generator).to(z.device)
        pos = (z * items[targets]).sum(-1).float()
        negl = (z * items[neg]).sum(-1).float()
        valid = neg != targets
        excluded = self._excluded(z.device)
        if excluded is not None:
            valid = valid & ~excluded[neg]
        valid = valid.float()
        loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none")
        loss = loss + valid * F.binary_cross_entropy_with_logits(negl, torch.zeros_like(negl), reduction="none")
        return loss.mean()
