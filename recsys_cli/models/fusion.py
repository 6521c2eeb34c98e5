"""Fusion of the encoder state with the per-scale vectors into one user state.

Every fusion takes the anchor's encoder state ``h`` [B, L, D] and the scale vectors ``v``
[B, S, L, D] and returns the user state [B, L, D] plus the weight it gave each scale ([S], detached,
for logging: which scale matters). ``keep`` [S] bool removes scales (ablation): a removed scale's
vector is zeroed and it gets no weight. With no scales at all, the user state is ``h``.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from recsys_cli.contract.params import Fraction


class Fusion(nn.Module):
    """Base: subclasses implement :meth:`combine`; this handles ablation and the empty case."""

    def __init__(self, dim: int, num_scales: int, dropout: Fraction = 0.1):
        super().__init__()
        self.dim, self.num_scales = dim, num_scales
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, h: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_scales == 0:
            return h, h.new_zeros(0)
        if keep is None:  # no ablation: skip the masking (two [B, S, L, D] passes per step)
            mixed, weights = self.combine(h, v, None)
        else:
            mixed, weights = self.combine(h, v * keep.view(1, -1, 1, 1), keep)
        return self.norm(h + self.dropout(mixed)), weights.detach()

    def combine(self, h, v, keep) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        """``keep`` is None (every scale) or [S] bool with the removed scales' ``v`` zeroed."""
        raise NotImplementedError


class ConcatFusion(Fusion):
    """MLP over [h; v_1; ...; v_S]; a scale's weight is its share of the first layer's norm."""

    def __init__(self, dim: int, num_scales: int, dropout: Fraction = 0.1):
        super().__init__(dim, num_scales, dropout)
        self.mlp = nn.Sequential(nn.Linear((num_scales + 1) * dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def combine(self, h, v, keep):
        B, S, L, D = v.shape
        x = torch.cat([h, v.permute(0, 2, 1, 3).reshape(B, L, S * D)], dim=-1)
        w = self.mlp[0].weight[:, D:].view(-1, S, D).norm(dim=(0, 2))
        w = w if keep is None else w * keep
        return self.mlp(x), w / w.sum().clamp(min=1e-12)


class WeightedFusion(Fusion):
    """Learned softmax weights per scale: sum_s w_s v_s."""

    def __init__(self, dim: int, num_scales: int, dropout: Fraction = 0.1):
        super().__init__(dim, num_scales, dropout)
        self.logits = nn.Parameter(torch.zeros(num_scales))

    def combine(self, h, v, keep):
        logits = self.logits if keep is None else self.logits.masked_fill(~keep, float("-inf"))
        w = torch.softmax(logits, dim=0)
        return torch.einsum("s,bsld->bld", w, v), w


class GateFusion(Fusion):
    """Per-dimension sigmoid gates from the anchor state: sum_s g_s(h) * v_s; weight = mean gate.

    The gates read the encoder state only (one [D, S*D] map), not the scale vectors: what the
    user is doing now decides which scales' dimensions pass. (Gates that also read each v_s cost
    an S x D x D map per position, about as much as the rest of the scale path.)
    """

    def __init__(self, dim: int, num_scales: int, dropout: Fraction = 0.1):
        super().__init__(dim, num_scales, dropout)
        with warnings.catch_warnings():  # no scales: an empty [0, D] map, kept for checkpoints
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            self.gate = nn.Linear(dim, num_scales * dim)

    def combine(self, h, v, keep):
        B, S, L, D = v.shape
        g = torch.sigmoid(self.gate(h)).view(B, L, S, D).permute(0, 2, 1, 3)  # [B, S, L, D]
        if keep is not None:
            g = g * keep.view(1, -1, 1, 1)
        w = g.mean(dim=(0, 2, 3))
        return (g * v).sum(1), w / w.sum().clamp(min=1e-12)


class AttentionFusion(Fusion):
    """Attention over the scale vectors with the encoder state as query; weight = attention mass."""

    def __init__(self, dim: int, num_scales: int, dropout: Fraction = 0.1):
        super().__init__(dim, num_scales, dropout)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def combine(self, h, v, keep):
        logits = torch.einsum("bld,bsld->bls", self.query(h), self.key(v)) / self.dim**0.5
        if keep is not None:
            logits = logits.masked_fill(~keep.view(1, 1, -1), float("-inf"))
        attn = torch.softmax(logits, dim=-1)
        mixed = torch.einsum("bls,bsld->bld", attn, self.value(v))
        return mixed, attn.mean(dim=(0, 1))
