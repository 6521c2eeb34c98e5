"""Analytic FLOP counts of a training step and an evaluation batch (formulas: the package docstring)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FlopModel:
    encoder: str  # transformer | gru | lstm
    dim: int
    layers: int
    ffn: int  # feed-forward width (transformer)
    num_items: int
    output: str  # all_positions | full_ce | sampled_softmax
    negatives: int = 0
    scales: int = 0
    scale_stats: int = 0  # statistics per window (0 without statistics)
    attention_pooling: bool = True

    def per_position(self, L: int) -> float:
        """Forward FLOPs of the encoder and the scales at one position."""
        D = self.dim
        if self.encoder == "transformer":
            enc = self.layers * (8 * D * D + 4 * D * self.ffn + 4 * L * D)
        elif self.encoder == "gru":
            enc = self.layers * 12 * D * D
        else:
            enc = self.layers * 16 * D * D
        S = self.scales
        if S:
            pool = (6 * D * D + 2 * L * D + 2 * S * L * D) if self.attention_pooling else 0
            enc += pool + 2 * S * self.scale_stats * D + 2 * S * D * D
        return float(enc)

    def train_step(self, B: int, L: int, M: int) -> float:
        D, N = self.dim, self.num_items
        if self.output == "all_positions":
            out = 2.0 * B * L * D * N
        elif self.output == "full_ce":
            out = 2.0 * M * D * N
        else:
            out = 2.0 * M * D * (self.negatives + 1)
        return 3.0 * (B * L * self.per_position(L) + out)

    def eval_batch(self, B: int, L: int) -> float:
        return B * L * self.per_position(L) + 2.0 * B * self.dim * self.num_items

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
