"""One representation per time scale at every position: pooling over window members.

Given the encoder's hidden states for the ``L`` inputs and the embeddings of the ``H`` older
carried events (a memory of ``T = H + L`` event vectors), each scale pools the members of its
window (``recsys_cli.data.windows.window_masks``) into one vector per position:

- ``mean``: masked mean. Windows are contiguous runs ending at the anchor, so the mean is a
  difference of prefix sums: O(T * D) per case whatever the window lengths;
- ``attention``: a per-scale query from the anchor's hidden state attends over the window members
  (target-aware pooling restricted to the window, as in time-interval aware models).

Optional per-window statistics (the seed method) are added through a linear projection: event
count, distinct items and categories, mean and spread of gaps, event-type histogram, time since the
previous event, each squashed to roughly [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recsys_cli.data.windows import TimeWindowScale, window_masks
from recsys_cli.errors import ConfigError

_GAP_SCALE = math.log1p(365 * 86400.0)  # log-seconds of a year: squashes gaps to ~[0, 1]


def _prefix(x: torch.Tensor) -> torch.Tensor:
    """[B, T, ...] -> [B, T + 1, ...] prefix sums with a leading zero."""
    return torch.cat([torch.zeros_like(x[:, :1]), x.cumsum(1)], dim=1)


def _take(prefix: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """prefix [B, T+1, F], index [B, S, L] -> [B, S, L, F]."""
    B, S, L = index.shape
    flat = index.reshape(B, S * L, 1).expand(-1, -1, prefix.shape[-1])
    return prefix.gather(1, flat).view(B, S, L, -1)


def window_statistics(
    masks: torch.Tensor,
    items: torch.Tensor,
    categories: torch.Tensor,
    event_types: torch.Tensor,
    times: torch.Tensor,
    num_event_types: int,
    max_events: torch.Tensor,
) -> torch.Tensor:
    """Per-window statistics [B, S, L, F] from window masks [B, S, L, T] and event fields [B, T].

    F = 6 + num_event_types: log count, distinct-item ratio, distinct-category ratio, log mean gap,
    log gap spread, log time since previous event, event-type shares. Padded anchors give zeros.
    """
    B, S, L, T = masks.shape
    H = T - L
    count = masks.sum(-1)  # [B, S, L]
    safe = count.clamp(min=1).to(times.dtype)
    end = torch.arange(H + 1, T + 1, device=masks.device).expand(B, S, L)  # exclusive end
    start = end - count  # window = [start, end) in memory coordinates

    # distinct members: j counts when its previous occurrence (same value) is before the window
    def distinct(values: torch.Tensor) -> torch.Tensor:
        j = torch.arange(T, device=values.device)
        same = (values[:, :, None] == values[:, None, :]) & (j[None, :] < j[:, None])  # [B, T(j), T(k)]
        prev = torch.where(same, j[None, None, :], torch.full_like(same, -1, dtype=torch.long)).amax(-1)
        first = prev[:, None, None, :] < start[..., None]  # [B, S, L, T]
        return (masks & first).sum(-1).float() / safe.float()

    gaps = torch.zeros_like(times, dtype=torch.float64)
    gaps[:, 1:] = (times[:, 1:] - times[:, :-1]).clamp(min=0).double()
    gap_sq = _prefix((gaps**2).unsqueeze(-1))
    t_prefix = times.double()
    n_gaps = (count - 1).clamp(min=1).double()
    t_end = t_prefix.gather(1, (end - 1).clamp(min=0).reshape(B, -1)).view(B, S, L)
    t_start = t_prefix.gather(1, start.clamp(max=T - 1).reshape(B, -1)).view(B, S, L)
    mean_gap = torch.where(count > 1, (t_end - t_start) / n_gaps, torch.zeros_like(t_end))
    # gaps inside the window are those of members start+1 .. end-1
    sq = (_take(gap_sq, end) - _take(gap_sq, (start + 1).clamp(max=T))).squeeze(-1)
    var = torch.where(count > 1, (sq / n_gaps - mean_gap**2).clamp(min=0), torch.zeros_like(sq))
    since_prev = gaps[:, H:].unsqueeze(1).expand(B, S, L)

    feats = [
        torch.log1p(count.float()) / torch.log1p(max_events.float()).view(1, S, 1),
        distinct(items),
        distinct(categories),
        (torch.log1p(mean_gap) / _GAP_SCALE).float(),
        (torch.log1p(var.sqrt()) / _GAP_SCALE).float(),
        (torch.log1p(since_prev) / _GAP_SCALE).float(),
    ]
    out = torch.stack(feats, dim=-1)
    if num_event_types:
        onehot = nn.functional.one_hot(event_types.clamp(max=num_event_types), num_event_types + 1)[..., 1:]
        hist = _take(_prefix(onehot.float()), end) - _take(_prefix(onehot.float()), start)
        out = torch.cat([out, hist / safe.unsqueeze(-1).float()], dim=-1)
    return out * (count > 0).unsqueeze(-1)


class MultiScalePooling(nn.Module):
    """Pools a memory of event vectors into one vector per scale and position: [B, S, L, D]."""

    def __init__(
        self,
        scales: list[TimeWindowScale],
        dim: int,
        pooling: str = "attention",
        statistics: bool = False,
        num_event_types: int = 0,
        dropout: float = 0.1,
    ):
        super().__init__()
        if pooling not in ("mean", "attention"):
            raise ConfigError(f"scales.pooling={pooling!r}: valid choices are 'mean', 'attention'")
        self.scales, self.pooling, self.statistics = scales, pooling, statistics
        self.num_event_types = num_event_types
        S = len(scales)
        self.register_buffer("max_events", torch.tensor([s.max_events for s in scales]), persistent=False)
        if pooling == "attention":
            self.query = nn.Parameter(torch.randn(S, dim, dim) / math.sqrt(dim))
            self.key = nn.Linear(dim, dim, bias=False)
            self.value = nn.Linear(dim, dim, bias=False)
        if statistics:
            self.stats_proj = nn.ModuleList(nn.Linear(6 + num_event_types, dim) for _ in range(S))
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        memory: torch.Tensor,
        hidden: torch.Tensor | list[torch.Tensor],
        batch: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """memory [B, S?, T, D] or [B, T, D] event vectors (older carried events, then encoder
        states), hidden [B, L, D] anchor states; batch holds ``times``, ``items`` ... of [B, T].
        Returns [B, S, L, D]."""
        valid = batch["items"] > 0
        B, T = valid.shape
        L = hidden.shape[1]
        masks = window_masks(self.scales, batch["times"], valid, L)  # [B, S, L, T]
        per_scale_memory = memory.dim() == 4
        if self.pooling == "mean":
            count = masks.sum(-1, keepdim=True).clamp(min=1)  # [B, S, L, 1]
            end = torch.arange(T - L + 1, T + 1, device=memory.device).expand(B, len(self.scales), L)
            start = end - masks.sum(-1)
            if per_scale_memory:  # [B, S, T, D]: pool each scale over its own memory
                prefix = _prefix(memory.transpose(0, 1).reshape(-1, T, memory.shape[-1]))
                prefix = prefix.view(len(self.scales), B, T + 1, -1).transpose(0, 1)
                idx_e = end.unsqueeze(-1).expand(-1, -1, -1, prefix.shape[-1])
                idx_s = start.unsqueeze(-1).expand(-1, -1, -1, prefix.shape[-1])
                pooled = (prefix.gather(2, idx_e) - prefix.gather(2, idx_s)) / count
            else:
                prefix = _prefix(memory)
                pooled = (_take(prefix, end) - _take(prefix, start)) / count
        else:
            q = torch.einsum("bld,sde->bsle", hidden, self.query)  # [B, S, L, D]
            k, v = self.key(memory), self.value(memory)
            if per_scale_memory:
                logits = torch.einsum("bsld,bstd->bslt", q, k) / math.sqrt(q.shape[-1])
            else:
                logits = torch.einsum("bsld,btd->bslt", q, k) / math.sqrt(q.shape[-1])
            logits = logits.masked_fill(~masks, float("-inf"))
            # empty rows (padded anchors) would be NaN: give them a zero distribution
            attn = torch.softmax(logits, dim=-1).nan_to_num(0.0)
            if per_scale_memory:
                pooled = torch.einsum("bslt,bstd->bsld", attn, v)
            else:
                pooled = torch.einsum("bslt,btd->bsld", attn, v)
        if self.statistics:
            stats = window_statistics(
                masks,
                batch["items"],
                batch["categories"],
                batch["event_types"],
                batch["times"],
                self.num_event_types,
                self.max_events,
            )
            pooled = pooled + torch.stack([proj(stats[:, s]) for s, proj in enumerate(self.stats_proj)], dim=1)
        return self.dropout(self.norm(pooled))
