"""One representation per time scale at every position.

Each case carries a memory of ``T = H + L`` events: ``H`` older carried events, then the ``L``
encoder inputs (newest last). A scale's window at an anchor is the contiguous run
``[start, anchor]`` of that memory (:func:`recsys_cli.data.windows.window_starts`), so

- the **bag** of the window (mean item embedding of all its events, also those older than the
  encoder's ``max_len``) is a difference of prefix sums: O(T * D) per case for every scale;
- the **context** of the window pools the encoder's hidden states of the window members among the
  encoder inputs: ``attention`` (a per-scale query from the anchor's state, restricted to the
  window: [B, S, L, L] scores, the size of one attention layer) or ``mean`` (prefix sums again);
- optional per-window **statistics** (the seed method) come from prefix sums too: event count,
  distinct items and categories, mean and spread of gaps, event-type histogram, time since the
  previous event, each squashed to about [0, 1].

A scale's vector is context + bag + W_stats stats: [B, S, L, D]; the fusion normalises and
weighs it. Every tensor of that size costs memory traffic, so the path is kept short.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recsys_cli.data.windows import TimeWindowScale, window_starts
from recsys_cli.errors import ConfigError

_GAP_SCALE = math.log1p(365 * 86400.0)  # log-seconds of a year: squashes gaps to ~[0, 1]


def prefix_sums(x: torch.Tensor) -> torch.Tensor:
    """[B, T, F] -> [B, T + 1, F] prefix sums with a leading zero row."""
    return torch.cat([torch.zeros_like(x[:, :1]), x.cumsum(1)], dim=1)


def window_sum(prefix: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Sum over ``[start, end)`` from prefix sums: prefix [B, T+1, F], start/end [B, S, L] ->
    [B, S, L, F]."""
    B, S, L = start.shape
    F = prefix.shape[-1]

    def take(index: torch.Tensor) -> torch.Tensor:
        return prefix.gather(1, index.reshape(B, S * L, 1).expand(-1, -1, F)).view(B, S, L, F)

    return take(end) - take(start)


def previous_occurrence(values: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B, T]: position of the previous equal value in the row, or -1."""
    order = torch.sort(values, dim=1, stable=True).indices  # equal values stay in position order
    ordered = values.gather(1, order)
    prev_sorted = torch.where(ordered[:, 1:] == ordered[:, :-1], order[:, :-1], -1)
    prev = torch.full_like(values, -1)
    return prev.scatter(1, order[:, 1:], prev_sorted)


def window_statistics(
    start: torch.Tensor,
    batch: dict[str, torch.Tensor],
    num_event_types: int,
    max_events: torch.Tensor,
) -> torch.Tensor:
    """Per-window statistics [B, S, L, F], F = 6 + num_event_types (see the module docstring).

    start: [B, S, L] window starts; batch fields ``items``, ``categories``, ``event_types``,
    ``times``: [B, T]. Empty windows (padded anchors) give zeros.
    """
    times = batch["times"]
    B, S, L = start.shape
    T = times.shape[1]
    H = T - L
    end = torch.arange(H + 1, T + 1, device=times.device).expand(B, S, L)  # exclusive
    count = (end - start).clamp(min=0)
    safe = count.clamp(min=1).float()

    def distinct(values: torch.Tensor) -> torch.Tensor:
        # repeats in [start, anchor] = #{j <= anchor : prev_j >= start} (prev_j >= start implies
        # j > start). Older memory events (j < H) contribute f(start) = #{j < H : prev_j >= start}
        # from a reverse cumulative histogram; encoder positions are compared directly.
        prev = previous_occurrence(values)  # [B, T]
        hist = torch.zeros(B, T + 1, device=values.device)
        hist.scatter_add_(1, prev[:, :H] + 1, torch.ones(B, H, device=values.device))
        at_least = hist[:, 1:].flip(1).cumsum(1).flip(1)  # [B, T]: #{j < H : prev_j >= s}
        old = at_least.gather(1, start.clamp(max=T - 1).reshape(B, -1)).view(B, S, L)
        j = torch.arange(L, device=values.device)
        recent = prev[:, None, None, H:] >= start[..., None]  # [B, S, L(anchor), L(j)]
        recent = (recent & (j <= j.view(L, 1))).sum(-1)
        return (count - old - recent).clamp(min=0).float() / safe

    # times relative to the newest event, in float32 (gaps, not absolute epochs, matter)
    t = (times - times[:, -1:]).float() * (batch["items"] > 0)
    gaps = torch.zeros_like(t)
    gaps[:, 1:] = (t[:, 1:] - t[:, :-1]).clamp(min=0) * (batch["items"][:, :-1] > 0)
    n_gaps = (count - 1).clamp(min=1).float()
    t_end = t[:, H:].unsqueeze(1).expand(B, S, L)
    t_start = t.gather(1, start.clamp(max=T - 1).reshape(B, -1)).view(B, S, L)
    mean_gap = torch.where(count > 1, (t_end - t_start) / n_gaps, 0.0)
    # the gaps inside a window belong to its members after the first: [start + 1, end)
    sq = window_sum(prefix_sums((gaps.double() ** 2).unsqueeze(-1)), (start + 1).clamp(max=T), end)
    var = torch.where(count > 1, (sq.squeeze(-1).float() / n_gaps - mean_gap**2).clamp(min=0), 0.0)
    since_prev = gaps[:, H:].unsqueeze(1).expand(B, S, L)
    feats = [
        torch.log1p(count.float()) / torch.log1p(max_events.float()).view(1, S, 1),
        distinct(batch["items"]),
        distinct(batch["categories"]),
        torch.log1p(mean_gap) / _GAP_SCALE,
        torch.log1p(var.sqrt()) / _GAP_SCALE,
        torch.log1p(since_prev) / _GAP_SCALE,
    ]
    out = torch.stack(feats, dim=-1)
    if num_event_types:
        types = batch["event_types"].clamp(max=num_event_types)
        onehot = nn.functional.one_hot(types, num_event_types + 1)[..., 1:].float()
        out = torch.cat([out, window_sum(prefix_sums(onehot), start, end) / safe.unsqueeze(-1)], -1)
    return out * (count > 0).unsqueeze(-1)


class MultiScalePooling(nn.Module):
    """Scale vectors [B, S, L, D] from event embeddings and encoder states."""

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
            self.stats_proj = nn.Parameter(torch.randn(S, 6 + num_event_types, dim) * 0.1)

    def forward(
        self, embeddings: torch.Tensor, hidden: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """embeddings [B, T, D] of every memory event; hidden [B, L, D] encoder states, or
        [B, S, L, D] when every scale has its own encoder; batch fields [B, T]."""
        valid = batch["items"] > 0
        B, T, D = embeddings.shape
        S = len(self.scales)
        L = hidden.shape[-2]
        start = window_starts(self.scales, batch["times"], valid, L)  # [B, S, L]
        end = torch.arange(T - L + 1, T + 1, device=start.device).expand(B, S, L)
        count = (end - start).clamp(min=1).unsqueeze(-1)  # [B, S, L, 1]

        # bag of the window: prefix[end] is a plain slice (every window ends at its anchor)
        prefix = prefix_sums(embeddings)  # [B, T + 1, D]
        older = prefix.gather(1, start.reshape(B, S * L, 1).expand(-1, -1, D)).view(B, S, L, D)
        out = (prefix[:, T - L + 1 :].unsqueeze(1) - older) / count  # [B, S, L, D]

        shared = hidden.dim() == 3  # one encoder for all scales: [B, L, D], else [B, S, L, D]
        chunk_start = (start - (T - L)).clamp(min=0)  # window start among the encoder inputs
        if self.pooling == "mean":
            hidden_s = hidden.unsqueeze(1).expand(B, S, L, D) if shared else hidden
            flat = prefix_sums(hidden_s.reshape(B * S, L, D)).view(B, S, L + 1, D)
            idx = torch.arange(1, L + 1, device=start.device).expand(B, S, L)
            take = lambda i: flat.gather(2, i.unsqueeze(-1).expand(-1, -1, -1, D))  # noqa: E731
            n = (idx - chunk_start).clamp(min=1).unsqueeze(-1)
            out = out + (take(idx) - take(chunk_start)) / n
        else:
            k, v = self.key(hidden), self.value(hidden)
            if shared:
                # all scales' queries at once: [B, L, D] @ [D, S*D] -> [B, L, S, D]
                q = (hidden @ self.query.permute(1, 0, 2).reshape(D, S * D)).view(B, L, S, D)
                logits = torch.einsum("bisd,bjd->bsij", q, k)  # [B, S, L, L]
            else:
                q = torch.einsum("bsld,sde->bsle", hidden, self.query)
                logits = torch.einsum("bsid,bsjd->bsij", q, k)
            j = torch.arange(L, device=start.device)
            allowed = (j >= chunk_start[..., None]) & (j <= j.view(1, 1, L, 1))
            logits = logits.masked_fill(~allowed, float("-inf")) / math.sqrt(D)
            attn = torch.softmax(logits, dim=-1).nan_to_num(0.0)
            if shared:
                out = out + (attn.reshape(B, S * L, L) @ v).view(B, S, L, D)
            else:
                out = out + attn @ v
        if self.statistics:
            stats = window_statistics(start, batch, self.num_event_types, self.max_events)
            out = out + torch.einsum("bslf,sfd->bsld", stats, self.stats_proj)
        return out
