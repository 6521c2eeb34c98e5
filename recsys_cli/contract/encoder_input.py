"""What an encoder reads: one typed value, so that a new field reaches the encoders that want it
without a change to the others.

Every encoder is ``forward(inputs: EncoderInput) -> [B, L, D]`` and declares whether it is causal
(its class or instance attribute ``causal``: True when the state at position i depends on
positions <= i only). The fields:

=========  ==============  =================================================================
field      shape           meaning
=========  ==============  =================================================================
``x``      [B, L, D]       the input vectors (dropout already applied), left-padded, newest last
``mask``   [B, L] bool     True where a position holds an event (or a query slot)
``times``  [B, L] int64    each position's time in unix seconds (padding: 0); None when the
                           data has no timestamps (only time-aware attention reads it)
=========  ==============  =================================================================

Positions are not a field: encoders count them back from the newest event (the last column), so
that states do not depend on how much padding precedes a sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass(frozen=True)
class EncoderInput:
    """The input of every sequence encoder (see the module docstring for the fields)."""

    x: torch.Tensor
    mask: torch.Tensor
    times: torch.Tensor | None = None

    def select(self, rows: torch.Tensor, first: int) -> EncoderInput:
        """The rows ``rows`` [G] and the positions ``first..L-1`` of every per-position field
        (every tensor field whose first two dimensions are [B, L]): what a length group encodes."""
        B, L = self.mask.shape
        cut = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor) and value.dim() >= 2 and tuple(value.shape[:2]) == (B, L):
                cut[f.name] = value[rows, first:]
        return replace(self, **cut)
