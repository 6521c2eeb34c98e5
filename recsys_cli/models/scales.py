"""One representation per time scale at every position.

Each case carries a memory of ``T = H + L`` events: ``H`` older carried events, then the ``L``
encoder inputs (newest last). A scale's window at an anchor is the contiguous run
``[start, anchor]`` of that memory; the batch carries ``window_start`` [B, S, L] and the window's
statistics ``scale_stats`` [B, S, L, F], both computed once over each user's whole history by
:func:`recsys_cli.data.window_features.compute_window_features`. From them:

- the **bag** of the window (mean item embedding of all its events, also those older than the
  encoder's ``max_len``) is a difference of prefix sums: O(T * D) per case for every scale;
- the **context** of the window pools the encoder's hidden states of the window members among the
  encoder inputs: ``attention`` (a query from the anchor's state; the [B, L, L] scores are
  computed once and each scale's softmax is restricted to its window) or ``mean`` (prefix sums);
- optional per-window **statistics** (the seed method: event count, distinct items and
  categories, mean and spread of gaps, event-type shares, time since the previous event) enter
  through a per-scale linear map.

A scale's vector is LayerNorm(context + bag + W_stats stats): [B, S, L, D]; the fusion weighs it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recsys_cli.contract.scales import TimeWindowScale


def prefix_sums(x: torch.Tensor) -> torch.Tensor:
    """[B, T, F] -> [B, T + 1, F] prefix sums with a leading zero row."""
    return torch.cat([torch.zeros_like(x[:, :1]), x.cumsum(1)], dim=1)


class MultiScalePooling(nn.Module):
    """Scale vectors [B, S, L, D] from event embeddings, encoder states and window fields."""

    def __init__(
        self,
        scales: list[TimeWindowScale],
        dim: int,
        pooling: str = "attention",
        statistics: bool = False,
        num_stats: int = 0,
    ):
        super().__init__()
        self.scales, self.pooling, self.statistics = scales, pooling, statistics
        S = len(scales)
        if pooling == "attention":
            # one query and key for all scales: the scores are computed once, [B, L, L], and each
            # scale restricts them to its own window
            self.query = nn.Linear(dim, dim, bias=False)
            self.key = nn.Linear(dim, dim, bias=False)
            self.value = nn.Linear(dim, dim, bias=False)
        if statistics:
            # F = num_stats window statistics (their names: DataSpec.stat_names)
            self.stats_proj = nn.Parameter(torch.randn(S, num_stats, dim) * 0.1)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        embeddings: torch.Tensor,
        hidden: torch.Tensor,
        batch: dict[str, torch.Tensor],
        anchors: int | None = None,
    ) -> torch.Tensor:
        """embeddings [B, T, D] of every memory event; hidden [B, L, D] encoder states, or
        [B, S, L, D] when every scale has its own encoder; batch ``window_start`` [B, S, L] and
        ``scale_stats`` [B, S, L, F]. Returns [B, S, A, D] for the last ``A = anchors`` encoder
        positions (all L by default; evaluation needs the newest one only)."""
        B, T, D = embeddings.shape
        L = batch["window_start"].shape[2]
        A = L if anchors is None else min(anchors, L)
        start = batch["window_start"][:, :, L - A :]  # [B, S, A]
        S = start.shape[1]
        end = torch.arange(T - A + 1, T + 1, device=start.device)  # [A] exclusive window ends
        count = (end - start).clamp(min=1).unsqueeze(-1)  # [B, S, A, 1]

        # bag of the window: prefix[end] is a plain slice (every window ends at its anchor)
        prefix = prefix_sums(embeddings)  # [B, T + 1, D]
        older = prefix.gather(1, start.reshape(B, S * A, 1).expand(-1, -1, D)).view(B, S, A, D)
        out = (prefix[:, T - A + 1 :].unsqueeze(1) - older) / count  # [B, S, A, D]

        shared = hidden.dim() == 3  # one encoder for all scales: [B, L, D], else [B, S, L, D]
        chunk_start = (start - (T - L)).clamp(min=0)  # window start among the encoder inputs
        anchor = torch.arange(L - A, L, device=start.device)  # [A] the anchors' encoder positions
        if self.pooling == "mean":
            hidden_s = hidden.unsqueeze(1).expand(B, S, L, D) if shared else hidden
            flat = prefix_sums(hidden_s.reshape(B * S, L, D)).view(B, S, L + 1, D)
            idx = (anchor + 1).expand(B, S, A)

            def take(i: torch.Tensor) -> torch.Tensor:
                return flat.gather(2, i.unsqueeze(-1).expand(-1, -1, -1, D))

            n = (idx - chunk_start).clamp(min=1).unsqueeze(-1)
            out = out + (take(idx) - take(chunk_start)) / n
        else:
            last = hidden[..., L - A :, :]
            q, k, v = self.query(last), self.key(hidden), self.value(hidden)
            logits = q @ k.transpose(-1, -2) / math.sqrt(D)  # [B, A, L] or [B, S, A, L]
            j = torch.arange(L, device=start.device)
            allowed = (j >= chunk_start[..., None]) & (j <= anchor.view(1, 1, A, 1))  # [B, S, A, L]
            logits = (logits.unsqueeze(1) if shared else logits).masked_fill(~allowed, float("-inf"))
            # a padded anchor has an empty window: its row is all -inf and becomes zeros
            attn = torch.softmax(logits, dim=-1).nan_to_num(0.0)
            if shared:
                out = out + (attn.reshape(B, S * A, L) @ v).view(B, S, A, D)
            else:
                out = out + attn @ v
        if self.statistics:
            stats = batch["scale_stats"][:, :, L - A :].to(out.dtype)  # [B, S, A, F]
            out = out + torch.einsum("bslf,sfd->bsld", stats, self.stats_proj)
        return self.norm(out)
