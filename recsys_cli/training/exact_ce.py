"""Exact cross-entropy over a whole item catalogue, as autograd functions that hold less than
``F.cross_entropy`` on the [M, N] logits would.

- :class:`FusedCrossEntropy`: one [M, N] matrix kept (the softmax, made in place), for catalogues
  that fit one item chunk;
- :func:`streaming_cross_entropy`: nothing of size N kept, chunks of items with an online
  log-sum-exp and the logits recomputed in the backward, for larger catalogues.

Both equal the plain loss to float rounding (``tests/test_losses_exact.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or float64 when an input is float64 (bf16 / fp16 inputs are computed in float32)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


class _StreamingCrossEntropy(torch.autograd.Function):
    """Exact mean cross-entropy over items 1..N, never holding more than [row_chunk, item_chunk]
    logits, in the forward and in the backward (the logits are recomputed there, not saved).

    Forward: per chunk of rows, an online log-sum-exp over chunks of items (running max and sum);
    saved for the backward: z, the item table, the targets, the excluded mask and each row's LSE.
    Backward, with p = exp(logits - LSE) of a chunk (the softmax, rebuilt from the saved LSE)::

        grad_z   = (sum_chunks p @ C_chunk - C[target]) * g / M
        grad_C[chunk] += p^T @ z_rows * g / M;   grad_C[target] -= z_rows * g / M   (index_add)

    Row 0 of the table (padding) and the excluded items are never candidates: their logits are
    -inf and they get no gradient (unless they are targets, which they never are in training).
    """

    @staticmethod
    def forward(
        ctx: Any,
        z: torch.Tensor,
        items: torch.Tensor,
        targets: torch.Tensor,
        excluded: torch.Tensor | None,
        item_chunk: int,
        row_chunk: int,
    ) -> torch.Tensor:
        dtype = compute_dtype(z, items)
        n, m_total = items.shape[0] - 1, z.shape[0]
        lse = torch.empty(m_total, dtype=dtype, device=z.device)
        total = torch.zeros((), dtype=dtype, device=z.device)
        with torch.autocast(z.device.type, enabled=False):
            for i in range(0, m_total, row_chunk):
                zc = z[i : i + row_chunk].to(dtype)  # [m, D]
                run_max = torch.full((zc.shape[0],), float("-inf"), dtype=dtype, device=z.device)
                run_sum = torch.zeros(zc.shape[0], dtype=dtype, device=z.device)
                for j in range(1, n + 1, item_chunk):
                    logits = _chunk_logits(zc, items, excluded, j, item_chunk, dtype)  # [m, c]
                    new_max = torch.maximum(run_max, logits.amax(dim=1))
                    # a row whose candidates so far are all excluded has max -inf: shift by 0 instead
                    shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
                    run_sum = run_sum * torch.exp(run_max - shift) + torch.exp(logits - shift[:, None]).sum(1)
                    run_max = new_max
                row_lse = run_max + torch.log(run_sum)
                lse[i : i + row_chunk] = row_lse
                target_logit = (zc * items[targets[i : i + row_chunk]].to(dtype)).sum(-1)
                total = total + (row_lse - target_logit).sum()
        ctx.save_for_backward(z, items, targets, lse, excluded)
        ctx.item_chunk, ctx.row_chunk = item_chunk, row_chunk
        return total / max(m_total, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, items, targets, lse, excluded = ctx.saved_tensors
        need_z, need_items = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dtype = lse.dtype
        n, m_total = items.shape[0] - 1, z.shape[0]
        scale = grad_output.to(dtype) / max(m_total, 1)
        grad_z = torch.zeros(z.shape, dtype=dtype, device=z.device) if need_z else None
        grad_c = torch.zeros(items.shape, dtype=dtype, device=items.device) if need_items else None
        with torch.autocast(z.device.type, enabled=False):
            for i in range(0, m_total, ctx.row_chunk):
                rows = slice(i, i + ctx.row_chunk)
                zc, row_lse, tc = z[rows].to(dtype), lse[rows], targets[rows]
                gz = torch.zeros_like(zc) if need_z else None
                for j in range(1, n + 1, ctx.item_chunk):
                    logits = _chunk_logits(zc, items, excluded, j, ctx.item_chunk, dtype)
                    p = torch.exp(logits - row_lse[:, None]) * scale  # [m, c]: softmax * g / M
                    if gz is not None:
                        gz += p @ items[j : j + ctx.item_chunk].to(dtype)
                    if grad_c is not None:
                        grad_c[j : j + ctx.item_chunk] += p.T @ zc
                if grad_z is not None and gz is not None:
                    grad_z[rows] = gz - items[tc].to(dtype) * scale
                if grad_c is not None:
                    grad_c.index_add_(0, tc, zc * -scale)
        return (
            grad_z.to(z.dtype) if grad_z is not None else None,
            grad_c.to(items.dtype) if grad_c is not None else None,
            None, None, None, None,
        )  # fmt: skip


class FusedCrossEntropy(torch.autograd.Function):
    """Exact mean cross-entropy over items 1..N that keeps one [M, N] matrix and nothing else.

    ``F.cross_entropy`` on the logits keeps the log-softmax for its backward and builds, there,
    the one-hot gradient of the NLL (a zero [M, N] matrix and a scatter) and the log-softmax's
    gradient: three more passes over [M, N]. Here the forward turns the logits into the softmax
    in place (one exp pass: ``p = exp(logits - max) / sum``) and keeps only ``p``; the backward
    subtracts 1 at each target, in place, and multiplies: ``grad_z = (p - onehot) @ C * g / M``,
    ``grad_C = (p - onehot)^T @ z * g / M``. Rows are processed ``row_chunk`` at a time. For
    catalogues above the item chunk, :class:`_StreamingCrossEntropy` (which keeps nothing of
    size N) is used instead.
    """

    @staticmethod
    def forward(
        ctx: Any,
        z: torch.Tensor,
        items: torch.Tensor,
        targets: torch.Tensor,
        excluded: torch.Tensor | None,
        row_chunk: int,
    ) -> torch.Tensor:
        dtype = compute_dtype(z, items)
        m_total = z.shape[0]
        with torch.autocast(z.device.type, enabled=False):
            candidates = items[1:].to(dtype)
            p = torch.empty(m_total, candidates.shape[0], dtype=dtype, device=z.device)
            total = torch.zeros((), dtype=dtype, device=z.device)
            for i in range(0, m_total, row_chunk):
                rows = slice(i, i + row_chunk)
                zc, pc = z[rows].to(dtype), p[rows]
                torch.matmul(zc, candidates.T, out=pc)  # logits, in place of the softmax to be
                if excluded is not None:
                    pc.masked_fill_(excluded[1:], float("-inf"))
                target_logit = pc.gather(1, (targets[rows] - 1).unsqueeze(1)).squeeze(1)
                top = pc.amax(dim=1, keepdim=True)
                pc.sub_(top).exp_()
                norm = pc.sum(dim=1, keepdim=True)
                pc.div_(norm)
                total = total + (top.squeeze(1) + norm.log().squeeze(1) - target_logit).sum()
        ctx.save_for_backward(z, items, targets, p)
        return total / max(m_total, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, items, targets, p = ctx.saved_tensors
        dtype = p.dtype
        m_total = z.shape[0]
        with torch.autocast(z.device.type, enabled=False):
            rows = torch.arange(m_total, device=p.device)
            p[rows, targets - 1] -= 1.0  # softmax - onehot, in place (the saved p is not needed again)
            p.mul_(grad_output.to(dtype) / max(m_total, 1))
            grad_z = grad_c = None
            if ctx.needs_input_grad[0]:
                grad_z = (p @ items[1:].to(dtype)).to(z.dtype)
            if ctx.needs_input_grad[1]:
                grad_c = torch.zeros(items.shape, dtype=dtype, device=items.device)
                grad_c[1:] = p.T @ z.to(dtype)
                grad_c = grad_c.to(items.dtype)
        return grad_z, grad_c, None, None, None


def _chunk_logits(
    zc: torch.Tensor, items: torch.Tensor, excluded: torch.Tensor | None, start: int, size: int, dtype: torch.dtype
) -> torch.Tensor:
    """[m, c] logits of the rows ``zc`` against items ``start .. start + size - 1``, in ``dtype``,
    excluded items at -inf."""
    logits = zc @ items[start : start + size].to(dtype).T
    if excluded is not None:
        logits = logits.masked_fill(excluded[start : start + size], float("-inf"))
    return logits


def streaming_cross_entropy(
    z: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    excluded: torch.Tensor | None = None,
    item_chunk_size: int = 8192,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """Exact mean cross-entropy of ``z`` [M, D] over the candidates 1..N of ``items`` [N + 1, D]
    (``targets`` [M] in 1..N; ``excluded`` [N + 1] bool: items that are not candidates).

    Equal to ``F.cross_entropy(z @ items[1:].T, targets - 1)`` (excluded logits at -inf) up to
    summation order, but never holds more than [chunk_size, item_chunk_size] logits, also in the
    backward. Computed in float32 (float64 for float64 inputs); gradients come back in the dtypes
    of ``z`` and ``items``. Not twice differentiable.
    """
    return _StreamingCrossEntropy.apply(z, items, targets, excluded, int(item_chunk_size), int(chunk_size))
