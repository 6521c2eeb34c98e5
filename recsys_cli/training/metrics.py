"""Full-ranking evaluation metrics for next-item recommendation (never sampled).

Every evaluated case has one target item and a score for every item of the catalogue. Scores are
``[B, N + 1]`` tensors whose column 0 is the padding item: it never counts as a recommendation.
Items are ranked by score, descending, ties broken by item index (smaller index first), so ranks
are deterministic and the same on every device. Items scored ``-inf`` (seen items after
:func:`mask_seen`) are never recommended: a target scored ``-inf`` gets rank ``N`` and is never a hit.

:class:`RankingMetrics` accumulates HR@K, NDCG@K, MRR@K, Recall@K and coverage@K over batches. It
keeps only float64 sums, a case count and one boolean "recommended at least once" flag per item and
K, never a ``[cases, N]`` matrix; the ``[B, N]`` work is per batch. :func:`sync_distributed`
all-reduces that state so that under DDP every rank computes the single-process numbers.

Given the items' training counts it also reports HR, NDCG, MRR and Recall per bucket of the target
item's number of training events (``cold/ndcg@10``, ``rare/cases``...: :mod:`.buckets`).

With ``keep_cases`` set it also keeps every case's index, target and exact 0-based rank in the whole
(seen-filtered) ranking (three ints per case, :meth:`RankingMetrics.cases`); :func:`gather_cases`
collects them from every rank under DDP. Every metric at any K follows from the rank.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from recsys_cli.errors import ConfigError
from recsys_cli.training.buckets import (
    FREQUENCY_BUCKETS,
    add_to_buckets,
    bucket_results,
    frequency_buckets,
    zero_bucket_state,
)
from recsys_cli.training.ranking import (
    _check_ids,
    _check_scores,
    _ranks,
    capped_ranks,
    mask_seen,
    target_ranks,
    top_k,
    top_k_covered,
)

__all__ = [
    "METRIC_NAMES",
    "RankingMetrics",
    "gather_cases",
    "mask_seen",
    "sync_distributed",
    "target_ranks",
]

METRIC_NAMES = ("hr", "ndcg", "mrr", "recall", "coverage")


def _validated_ks(ks: Sequence[int], num_items: int) -> tuple[int, ...]:
    if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
        raise ConfigError(f"metrics.ks: expected a list of integers such as [10, 20], got {ks!r}")
    values = []
    for k in ks:
        if isinstance(k, bool):
            raise ConfigError(f"metrics.ks: K={k!r} is not an integer; use e.g. [10, 20]")
        try:
            k_int = operator.index(k)
        except TypeError:
            raise ConfigError(f"metrics.ks: K={k!r} is not an integer; use e.g. [10, 20]") from None
        if k_int < 1:
            raise ConfigError(f"metrics.ks: K={k_int} must be at least 1; use K >= 1")
        if k_int > num_items:
            raise ConfigError(
                f"metrics.ks: K={k_int} is larger than the catalogue ({num_items} items); "
                f"use K <= {num_items}"
            )
        values.append(k_int)
    if not values:
        raise ConfigError("metrics.ks: the list is empty; give at least one K, e.g. [10]")
    return tuple(sorted(set(values)))


class RankingMetrics:
    """Accumulates HR@K, NDCG@K, MRR@K, Recall@K, coverage@K over batches; one target per case.

    Per case with 0-based target rank ``r`` and cut-off ``K``: ``hr = recall = [r < K]``,
    ``ndcg = [r < K] / log2(r + 2)``, ``mrr = [r < K] / (r + 1)``. ``compute`` averages them over
    cases. ``coverage@K`` is the number of distinct items that appear in at least one case's
    top-K, divided by ``num_items``.

    State (see :meth:`state`): ``count`` (int64 scalar), ``hr``/``ndcg``/``mrr`` (float64 ``[len(ks)]``
    sums) and ``covered`` (bool ``[len(ks), num_items]``, item ``i`` at column ``i - 1``). It lives
    on ``device`` if given, else on the device of the first :meth:`update`.

    With ``item_train_counts`` (``[N + 1]``: every item's training events) the cases are also
    summed per bucket of their target's count (:mod:`recsys_cli.training.buckets`; state
    ``bucket_count`` int64 ``[G]``, ``bucket_hr``/``bucket_ndcg``/``bucket_mrr`` float64
    ``[G, len(ks)]``); the overall sums are computed exactly as without buckets.

    Raises:
        ConfigError: if ``ks`` is empty, or some K is not an integer, ``< 1`` or ``> num_items``.
    """

    def __init__(
        self,
        ks: Sequence[int],
        num_items: int,
        device: torch.device | str | None = None,
        item_train_counts: np.ndarray | Tensor | None = None,
    ) -> None:
        try:
            n = operator.index(num_items)
        except TypeError:
            n = 0
        if isinstance(num_items, bool) or n < 1:
            raise ValueError(f"num_items must be a positive integer, got {num_items!r}")
        self.num_items = n
        self.ks = _validated_ks(ks, num_items)
        self._device = torch.device(device) if device is not None else None
        self._state: dict[str, Tensor] | None = None
        self.buckets: tuple[str, ...] = ()
        self._item_bucket: Tensor | None = None  # [N + 1] bucket index of every item
        if item_train_counts is not None:
            self._item_bucket = frequency_buckets(item_train_counts, n)
            self.buckets = tuple(name for name, _ in FREQUENCY_BUCKETS)
        # keep every case's (user, target, full rank) for per-case reports (the test stage)
        self.keep_cases = False
        self._cases: list[tuple[Tensor, Tensor, Tensor]] = []

    # -- state -------------------------------------------------------------------------------

    def _zero_state(self, device: torch.device) -> dict[str, Tensor]:
        nk = len(self.ks)
        return {
            "count": torch.zeros((), dtype=torch.int64, device=device),
            "hr": torch.zeros(nk, dtype=torch.float64, device=device),
            "ndcg": torch.zeros(nk, dtype=torch.float64, device=device),
            "mrr": torch.zeros(nk, dtype=torch.float64, device=device),
            "covered": torch.zeros(nk, self.num_items, dtype=torch.bool, device=device),
        } | (zero_bucket_state(nk, device) if self.buckets else {})

    def _ensure_state(self, device: torch.device | None = None) -> dict[str, Tensor]:
        if self._state is None:
            if self._device is None:
                self._device = device if device is not None else torch.device("cpu")
            self._state = self._zero_state(self._device)
        return self._state

    @property
    def device(self) -> torch.device | None:
        """Where the state lives (None until the first update when no device was given)."""
        return self._device

    def state(self) -> dict[str, Tensor]:
        """Copies of the raw state tensors: ``count``, ``hr``, ``ndcg``, ``mrr``, ``covered`` (and
        the ``bucket_*`` ones with buckets).

        Sums and counts combine by addition, ``covered`` by logical OR (MAX).
        """
        return {name: t.clone() for name, t in self._ensure_state().items()}

    def load_state(self, state: dict[str, Tensor]) -> None:
        """Replace the state by ``state`` (as returned by :meth:`state`), moved to this device."""
        own = self._ensure_state()
        if set(state) != set(own):
            raise ValueError(f"state keys {sorted(state)} do not match {sorted(own)}")
        new = {}
        for name, current in own.items():
            value = torch.as_tensor(state[name])
            if value.shape != current.shape:
                raise ValueError(
                    f"state[{name!r}] has shape {tuple(value.shape)}, expected "
                    f"{tuple(current.shape)} (ks={list(self.ks)}, num_items={self.num_items})"
                )
            new[name] = value.to(device=current.device, dtype=current.dtype).clone()
        self._state = new

    def merge(self, other: RankingMetrics) -> None:
        """Add ``other``'s cases to this accumulator (sums add, coverage flags OR)."""
        if (self.ks, self.num_items, self.buckets) != (other.ks, other.num_items, other.buckets):
            raise ValueError(
                f"cannot merge metrics with ks={list(other.ks)}, num_items={other.num_items}, "
                f"buckets={list(other.buckets)} into ks={list(self.ks)}, num_items={self.num_items}, "
                f"buckets={list(self.buckets)}"
            )
        if other._state is None:
            return
        own = self._ensure_state(other._state["count"].device)
        for name, value in other._state.items():
            value = value.to(own[name].device)
            if name == "covered":
                own[name] |= value
            else:
                own[name] += value

    def reset(self) -> None:
        """Forget all cases (the state stays on its device)."""
        self._cases = []
        if self._state is not None:
            for t in self._state.values():
                t.zero_()

    @property
    def count(self) -> int:
        """Number of cases accumulated so far."""
        return 0 if self._state is None else int(self._state["count"])

    # -- accumulation ------------------------------------------------------------------------

    @torch.no_grad()
    def update(
        self,
        scores: Tensor,
        targets: Tensor,
        seen: Tensor | None = None,
        overwrite: bool = False,
        cases: Tensor | None = None,
    ) -> None:
        """Accumulate one batch.

        Args:
            scores: ``[B, N+1]`` raw scores (column 0 = padding, ignored); not modified unless
                ``overwrite``.
            targets: ``[B]`` integer target item ids in ``1..N``.
            seen: optional ``[B, S]`` item ids padded with 0 to filter out (as in :func:`mask_seen`);
                a seen target is never a hit.
            overwrite: the scores are the caller's to discard: the seen items are masked in place
                instead of in a copy (one [B, N] copy less per batch).
            cases: ``[B]`` the cases' indices (batch field ``case``), kept with their targets and
                ranks when ``keep_cases``.
        """
        _check_scores(scores)
        if scores.shape[1] != self.num_items + 1:
            raise ValueError(
                f"scores have {scores.shape[1]} columns, expected num_items + 1 = "
                f"{self.num_items + 1} (column 0 = padding)"
            )
        if targets.shape != (scores.shape[0],):
            raise ValueError(
                f"targets must have shape [B] with B={scores.shape[0]}, got {tuple(targets.shape)}"
            )
        scores = scores.detach()
        device = scores.device
        targets = targets.to(device=device, dtype=torch.long)
        _check_ids(targets, 1, self.num_items, "targets")
        if seen is not None:
            scores = mask_seen(scores if overwrite else scores.clone(), seen)
        items = scores[:, 1:]  # [B, N]; item i at column i - 1

        state = self._ensure_state(device)
        if scores.shape[0] == 0:
            return
        # one topk per row: metrics at K <= max(ks) need neither ranks beyond it nor the whole row
        values, indices = top_k(items, self.ks)
        if self.keep_cases:  # the exact rank (one more pass over the row); capped, it is the same
            full = _ranks(items, targets - 1)
            self._keep_cases(cases, targets, full)
            ranks = full.clamp(max=max(self.ks))
        else:
            ranks = capped_ranks(items, targets - 1, values, max(self.ks))  # [B]

        ks = torch.tensor(self.ks, device=device)
        hit = ranks.unsqueeze(0) < ks.unsqueeze(1)  # [nk, B]
        ranks64 = ranks.to(torch.float64)
        zero = torch.zeros((), dtype=torch.float64, device=device)
        ndcg = torch.where(hit, 1.0 / torch.log2(ranks64 + 2.0), zero)
        mrr = torch.where(hit, 1.0 / (ranks64 + 1.0), zero)

        covered = top_k_covered(items, self.ks, values, indices)  # [nk, N]

        target_device = state["count"].device
        state["count"] += scores.shape[0]
        state["hr"] += hit.sum(dim=1).to(device=target_device, dtype=torch.float64)
        state["ndcg"] += ndcg.sum(dim=1).to(target_device)
        state["mrr"] += mrr.sum(dim=1).to(target_device)
        state["covered"] |= covered.to(target_device)
        if self.buckets:
            if self._item_bucket.device != device:
                self._item_bucket = self._item_bucket.to(device)
            values = {"hr": hit.to(torch.float64), "ndcg": ndcg, "mrr": mrr}
            add_to_buckets(state, self._item_bucket[targets], values)

    def _keep_cases(self, cases: Tensor | None, targets: Tensor, ranks: Tensor) -> None:
        if cases is None or cases.shape != targets.shape:
            raise ValueError("keep_cases needs cases [B] with every batch (the cases' indices)")
        self._cases.append((cases.detach().cpu().long(), targets.cpu(), ranks.cpu()))

    def cases(self) -> dict[str, np.ndarray]:
        """This process's kept cases: ``case`` (index), ``item`` (the target) and ``rank`` (0-based in the
        whole ranking; ``num_items`` for a target that cannot be recommended), int64 arrays in the
        order they were accumulated; with buckets also ``bucket`` (the target's index in
        :data:`~recsys_cli.training.buckets.FREQUENCY_BUCKETS`)."""
        if self._cases:
            ids, items, ranks = (torch.cat(parts).numpy() for parts in zip(*self._cases, strict=True))
        else:
            ids = items = ranks = np.zeros(0, dtype=np.int64)
        cases = {"case": ids, "item": items, "rank": ranks}
        if self._item_bucket is not None:
            cases["bucket"] = self._item_bucket.cpu().numpy()[items]
        return cases

    # -- results -----------------------------------------------------------------------------

    def compute(self) -> dict[str, float]:
        """``{"hr@K", "ndcg@K", "mrr@K", "recall@K", "coverage@K"}`` for every K.

        Averages are over cases (NaN when no case was accumulated); coverage is over ``num_items``.
        With buckets, then per bucket ``"<bucket>/cases"`` (an int) and ``"<bucket>/<metric>@K"``
        (no coverage); an empty bucket has cases 0 and no metric keys, never NaN
        (:func:`~recsys_cli.training.buckets.bucket_results`).
        """
        state = self._ensure_state()
        count = int(state["count"])
        sums = {
            "hr": state["hr"].tolist(),
            "ndcg": state["ndcg"].tolist(),
            "mrr": state["mrr"].tolist(),
        }
        sums["recall"] = sums["hr"]  # one target per case: recall@K == hit@K
        covered = state["covered"].sum(dim=1).tolist()
        result: dict[str, float] = {}
        for name in METRIC_NAMES:
            for i, k in enumerate(self.ks):
                if name == "coverage":
                    value = covered[i] / self.num_items
                else:
                    value = sums[name][i] / count if count else math.nan
                result[f"{name}@{k}"] = float(value)
        if self.buckets:
            result.update(bucket_results(state, self.ks))
        return result

    def __repr__(self) -> str:
        return f"RankingMetrics(ks={list(self.ks)}, num_items={self.num_items}, count={self.count})"


def collective_device(default: torch.device) -> torch.device:
    """Where tensors must be for a collective: the current GPU under nccl, ``default`` otherwise."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return default


def sync_distributed(metrics: RankingMetrics) -> None:
    """All-reduce ``metrics``' state over the default process group; a no-op without one.

    Sums and case counts (per bucket too) are summed, coverage flags are combined by MAX (logical
    OR), so every rank then computes the numbers a single process would have computed over all ranks' cases,
    provided the ranks evaluated disjoint cases (no duplicates, e.g. no DistributedSampler padding).
    Every rank must call it (it is a collective), including ranks that saw no case.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    state = metrics.state()
    comm_device = collective_device(state["count"].device)
    reduced = {}
    for name, value in state.items():
        if name == "covered":
            flags = value.to(device=comm_device, dtype=torch.uint8)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            reduced[name] = flags.bool()
        else:
            value = value.to(comm_device)
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            reduced[name] = value
    metrics.load_state(reduced)


def gather_cases(metrics: RankingMetrics) -> dict[str, np.ndarray]:
    """Every process's kept cases (:meth:`RankingMetrics.cases`), sorted by case index, so that
    one process or several give the same arrays. Under DDP it is a collective (every rank must
    call it) and every rank gets all cases (``all_gather_object``: three ints per case)."""
    import torch.distributed as dist

    cases = metrics.cases()
    if dist.is_available() and dist.is_initialized():
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, cases)
        cases = {name: np.concatenate([part[name] for part in parts]) for name in cases}
    order = np.argsort(cases["case"], kind="stable")
    return {name: values[order] for name, values in cases.items()}
