"""Ranking kernels of full-catalogue evaluation: seen-item masking, target ranks, top-K sets.

Items are ranked by score, descending, ties broken by item index (smaller index first); items
scored ``-inf`` or NaN are never recommended, and a NaN score is never above a target's. Every
function here reads a ``[B, N]`` (or ``[B, N + 1]``) score matrix a small, fixed number of times,
so that ranking a million-item catalogue costs a few passes over its scores: the tie rule is
applied exactly, but only to the rows that have a tie where it matters (a float score matrix
rarely does).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["capped_ranks", "mask_seen", "target_ranks", "top_k", "top_k_covered"]


def _check_ids(ids: Tensor, low: int, high: int, what: str) -> None:
    """Raise ValueError unless every id lies in ``low..high`` (one host sync)."""
    if ids.numel() == 0:
        return
    bad = torch.logical_or(ids < low, ids > high).any()
    if bool(bad):
        raise ValueError(
            f"{what}: ids must lie in {low}..{high}, got values in "
            f"{int(ids.min())}..{int(ids.max())}"
        )


def _check_scores(scores: Tensor) -> None:
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(
            f"scores must have shape [B, N+1] with N >= 1 (column 0 = padding), "
            f"got {tuple(scores.shape)}"
        )
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating-point tensor, got {scores.dtype}")


def mask_seen(scores: Tensor, seen: Tensor) -> Tensor:
    """Set the scores of seen items and of the padding column 0 to ``-inf``, in place.

    Args:
        scores: ``[B, N+1]`` float scores; modified in place and returned.
        seen: ``[B, S]`` integer item ids in ``0..N``, padded with 0 (``S`` may be 0).
    """
    _check_scores(scores)
    if seen.dim() != 2 or seen.shape[0] != scores.shape[0]:
        raise ValueError(
            f"seen must have shape [B, S] with B={scores.shape[0]}, got {tuple(seen.shape)}"
        )
    num_items = scores.shape[1] - 1
    if seen.shape[1] > 0:
        seen = seen.to(device=scores.device, dtype=torch.long)
        _check_ids(seen, 0, num_items, "seen")
        scores.scatter_(1, seen, float("-inf"))
    scores[:, 0] = float("-inf")
    return scores


def _ranks(items: Tensor, targets0: Tensor) -> Tensor:
    """0-based ranks of ``targets0`` (0-based columns of ``items``: [B, N], no padding column)."""
    num_items = items.shape[1]
    target_scores = items.gather(1, targets0.unsqueeze(1))  # [B, 1]
    above = (items > target_scores).sum(dim=1)
    ties = (items == target_scores).sum(dim=1)  # the target itself, and any item tied with it
    ranks = above
    tied = torch.nonzero(ties > 1).flatten()
    if tied.numel():  # only rows with a tie pay for the index comparison
        rows, t0 = items[tied], targets0[tied].unsqueeze(1)
        column = torch.arange(num_items, device=items.device)
        before = ((rows == target_scores[tied]) & (column < t0)).sum(dim=1)
        ranks = ranks.index_add(0, tied, before)
    # A target scored -inf (filtered) or NaN is never recommended: rank N, never a hit.
    recommendable = target_scores.squeeze(1) > float("-inf")
    return torch.where(recommendable, ranks, torch.full_like(ranks, num_items))


def target_ranks(scores: Tensor, targets: Tensor) -> Tensor:
    """0-based rank of each target among items ``1..N`` (column 0, the padding item, is ignored).

    ``rank = #(items scored higher) + #(items scored equal with a smaller index)``; a target whose
    own score is ``-inf`` (or NaN) gets rank ``N``.

    Args:
        scores: ``[B, N+1]`` float scores.
        targets: ``[B]`` integer item ids in ``1..N``.

    Returns:
        ``[B]`` long ranks on the device of ``scores``.
    """
    _check_scores(scores)
    if targets.shape != (scores.shape[0],):
        raise ValueError(
            f"targets must have shape [B] with B={scores.shape[0]}, got {tuple(targets.shape)}"
        )
    targets = targets.to(device=scores.device, dtype=torch.long)
    _check_ids(targets, 1, scores.shape[1] - 1, "targets")
    return _ranks(scores[:, 1:], targets - 1)


def _top_k_mask(items: Tensor, kth_values: Tensor, k: int) -> Tensor:
    """``[B, N]`` bool: the items whose rank (score desc, index asc) is ``< k``, ``-inf`` excluded.

    ``kth_values`` is the ``[B, 1]`` k-th largest score of each row. Every item scored above it is
    in the top k; of the items tied with it, the ones with the smallest indices fill the rest.
    """
    above = items > kth_values
    tied = items == kth_values
    free_slots = k - above.sum(dim=1, keepdim=True)
    tied_in = tied & (torch.cumsum(tied, dim=1, dtype=torch.int32) <= free_slots)
    return (above | tied_in) & (items > float("-inf"))


def top_k(items: Tensor, ks: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Every row's ``max(ks) + 1`` best scores (at most N), sorted descending, and their columns:
    what :func:`capped_ranks` and :func:`top_k_covered` read instead of the whole row."""
    width = min(max(ks) + 1, items.shape[1])
    return torch.topk(items, width, dim=1, largest=True, sorted=True)


def capped_ranks(items: Tensor, targets0: Tensor, values: Tensor, cap: int) -> Tensor:
    """``min(rank, cap)`` of each target (0-based columns of ``items``), ``values`` being the rows'
    sorted best scores from :func:`top_k` with ``max(ks) == cap``: all a metric at K <= cap needs.

    A target scored below the ``cap``-th best score (or ``-inf``, or NaN) ranks ``cap`` or later.
    Otherwise every item scored above it is among the best scores, so its rank is their count,
    unless an item is tied with it (or a score is NaN): those rows take the exact :func:`_ranks`.
    """
    s = items.gather(1, targets0.unsqueeze(1))  # [B, 1]
    ranks = torch.full_like(targets0, cap)
    contender = (s.squeeze(1) >= values[:, cap - 1]) & (s.squeeze(1) > float("-inf"))
    tied = (values == s).sum(dim=1) > 1
    nan = values[:, 0].isnan()  # topk puts NaN first: such a row takes the exact count
    ranks = torch.where(contender & ~tied & ~nan, (values > s).sum(dim=1), ranks)
    unclear = torch.nonzero((contender & tied) | nan).flatten()
    if unclear.numel():
        exact = _ranks(items[unclear], targets0[unclear]).clamp(max=cap)
        ranks = ranks.index_copy(0, unclear, exact)
    return ranks


def top_k_covered(items: Tensor, ks: Sequence[int], values: Tensor, indices: Tensor) -> Tensor:
    """``[len(ks), N]`` bool: the items in at least one row's top K, for every K of ``ks``.

    The rows' best scores and their columns (:func:`top_k`) give every row's top-K set directly
    where the K-th score is strictly above the next one, or is ``-inf`` (the set is then the finite
    items among the first K, whatever the order of the ties). A row with a tie across the K-th
    place takes the tied items with the smallest indices (:func:`_top_k_mask`, on those rows only).
    """
    B, N = items.shape
    covered = torch.zeros(len(ks), N, dtype=torch.bool, device=items.device)
    if B == 0:
        return covered
    for i, k in enumerate(ks):
        kth = values[:, k - 1]
        if k < N:
            clear = (kth > values[:, k]) | (kth == float("-inf"))
        else:  # the whole catalogue: no place after the K-th
            clear = torch.ones_like(kth, dtype=torch.bool)
        clear &= ~values[:, 0].isnan()  # topk puts NaN first
        top = indices[clear, :k][values[clear, :k] > float("-inf")]
        covered[i, top] = True
        unclear = torch.nonzero(~clear).flatten()
        if unclear.numel():
            rows = items[unclear]
            rows = rows.masked_fill(rows.isnan(), float("-inf"))  # NaN: never recommended
            kth_rows = torch.topk(rows, k, dim=1).values[:, k - 1 :]
            covered[i] |= _top_k_mask(rows, kth_rows, k).any(dim=0)
    return covered
