"""Time inside attention: what the Transformer's attention reads of the events' times.

Three switches of ``model/encoder=transformer`` (or ``bert``), each off by default (building no
module and drawing no random number when off):

- ``time_bias=hstu`` (HSTU, Zhai et al. 2024; ``RelativeBucketedTimeAndPositionBasedBias`` of
  generative-recommenders): every attention logit of query i and key j gets a learned scalar per
  head for the bucket ``floor(log(max(|t_i - t_j|, 1 s)) / 0.301)`` of their time gap (buckets
  0..128, the last one catching every longer gap: 129 as in HSTU's code) plus a learned scalar per
  head for their relative position ``i - j``. Each block has its own tables, as each HSTU layer.
  Unlike HSTU's code, which measures gaps from the *next* event's time (the target's, known there
  because it trains on whole sequences), the query's own time is used: the time of the event
  being predicted is never read.
- ``time_bias=tisasrec`` (TiSASRec, Li et al. WSDM 2020): the gap ``|t_i - t_j|`` divided by the
  user's smallest non-zero gap between consecutive events, floored and clipped at ``time_span``,
  indexes learned interval embeddings added to the keys and to the values
  (``q . (k_j + r_ij^K)``, ``sum_j a_ij (v_j + r_ij^V)``). The smallest gap is taken over the
  events up to the query (a running minimum) in a causal encoder, so that no state reads a later
  event; over the whole sequence, as TiSASRec, in a bidirectional one.
- ``head_windows=[30m, 1d, 30d, null]``: head h attends only to the keys within its window of the
  query, ``t_i - t_j <= window`` (the scales' window semantics; ``|t_i - t_j|`` in a bidirectional
  encoder), null for no limit: the time scales moved inside attention, one mask per batch.

Padding has time 0; its keys are masked out, so its huge gaps never count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.contract.scales import parse_duration
from recsys_cli.errors import ConfigError

HSTU_LOG_BASE = 0.301  # HSTU's bucket width in natural-log units (about log(1.35))
TIME_BIASES = ("hstu", "tisasrec")


def hstu_buckets(gaps: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """Time gaps in seconds (any shape, int or float) -> buckets 0..``num_buckets`` (int64):
    ``floor(log(max(|gap|, 1)) / 0.301)``, clipped at ``num_buckets``."""
    logs = torch.log(gaps.abs().to(torch.float32).clamp(min=1.0)) / HSTU_LOG_BASE
    return logs.long().clamp(0, num_buckets)


def time_gaps(times: torch.Tensor) -> torch.Tensor:
    """[B, L] times -> [B, L, L] ``t_i - t_j`` (query i, key j)."""
    return times[:, :, None] - times[:, None, :]


def tisasrec_intervals(times: torch.Tensor, mask: torch.Tensor, time_span: int, causal: bool) -> torch.Tensor:
    """[B, L] times and validity -> [B, L, L] int64 intervals in 0..``time_span``: ``|t_i - t_j|``
    over the user's smallest non-zero gap between consecutive events (those up to i when
    ``causal``; 1 s when there is none), floored and clipped."""
    gap = times[:, 1:] - times[:, :-1]  # [B, L - 1]: the gap before position 1..L-1
    real = mask[:, 1:] & mask[:, :-1] & (gap > 0)
    big = torch.iinfo(torch.int64).max
    gap = torch.cat([gap.new_full((gap.shape[0], 1), big), gap.masked_fill(~real, big)], dim=1)
    if not causal:
        unit = gap.min(dim=1, keepdim=True).values.expand_as(gap)
    elif torch.onnx.is_in_onnx_export():  # ONNX has no cummin: the same minimum over j <= i, [B, L, L]
        L = gap.shape[1]
        later = torch.ones(L, L, dtype=torch.bool, device=gap.device).triu(1)
        unit = gap[:, None, :].masked_fill(later, big).min(dim=-1).values
    else:
        unit = gap.cummin(dim=1).values
    unit = torch.where(unit == big, torch.ones_like(unit), unit)  # [B, L] per query
    scaled = torch.div(time_gaps(times).abs(), unit[:, :, None], rounding_mode="floor")
    return scaled.clamp(max=time_span)


def parse_head_windows(windows: list | None, num_heads: int) -> list[int | None] | None:
    """``model.encoder.head_windows`` -> seconds per head (None: no limit); one per head."""
    if windows is None:
        return None
    windows = list(windows)
    if len(windows) != num_heads:
        raise ConfigError(
            f"model.encoder.head_windows has {len(windows)} windows for model.encoder.num_heads="
            f"{num_heads}; give one per head (null: no limit), e.g. [30m, 1d, 30d, null] with 4 heads"
        )
    seconds = [None if w is None else parse_duration(w, "model.encoder.head_windows") for w in windows]
    if any(s is not None and s <= 0 for s in seconds):
        raise ConfigError(f"model.encoder.head_windows={windows}: every window must be longer than 0")
    return seconds


def head_window_mask(times: torch.Tensor, windows: list[int | None], causal: bool) -> torch.Tensor:
    """[B, L] times -> [B, H, L, L] bool: key j is inside head h's window of query i."""
    gaps = time_gaps(times)
    gaps = gaps if causal else gaps.abs()
    inside = [torch.ones_like(gaps, dtype=torch.bool) if w is None else gaps <= w for w in windows]
    return torch.stack(inside, dim=1)


class HSTUBias(nn.Module):
    """A learned scalar per head for each time-gap bucket and each relative position, added to
    the attention logits (one per block). ``forward(buckets [B, L, L]) -> [B, H, L, L]``."""

    def __init__(self, num_heads: int, max_len: int, num_buckets: int):
        super().__init__()
        self.max_len = max_len
        # N(0, 0.02^2), as HSTU initialises its time and position weights
        self.time_weight = nn.Parameter(torch.randn(num_heads, num_buckets + 1) * 0.02)
        self.position_weight = nn.Parameter(torch.randn(num_heads, 2 * max_len - 1) * 0.02)

    def forward(self, buckets: torch.Tensor) -> torch.Tensor:
        L = buckets.shape[-1]
        steps = torch.arange(L, device=buckets.device)
        relative = steps[:, None] - steps[None, :] + self.max_len - 1  # [L, L] i - j, shifted
        time = self.time_weight[:, buckets].transpose(0, 1)  # [B, H, L, L]
        return time + self.position_weight[:, relative].unsqueeze(0)


class TiSASRecIntervals(nn.Module):
    """Interval embeddings for keys and values (one pair of tables per block), and the attention
    that reads them: ``attend(q, k, v [B, H, L, d], allowed [B, 1|H, L, L], intervals [B, L, L])``."""

    def __init__(self, dim: int, time_span: int, init_std: float):
        super().__init__()
        self.keys = nn.Embedding(time_span + 1, dim)
        self.values = nn.Embedding(time_span + 1, dim)
        for table in (self.keys, self.values):
            nn.init.normal_(table.weight, std=init_std)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor,
        intervals: torch.Tensor, dropout: float,
    ) -> torch.Tensor:  # fmt: skip
        B, H, L, d = q.shape
        span = self.keys.num_embeddings
        index = intervals[:, None].expand(B, H, L, L)
        # q . r_ij^K without a [B, L, L, D] tensor: q against every interval's key, then gathered
        by_interval = torch.einsum("bhld,shd->bhls", q, self.keys.weight.view(span, H, d))
        logits = (q @ k.transpose(-1, -2) + by_interval.gather(-1, index)) / math.sqrt(d)
        weights = F.dropout(logits.masked_fill(~allowed, float("-inf")).softmax(-1), dropout, self.training)
        # sum_j a_ij r_ij^V: the weights summed per interval, then against the interval values
        per_interval = torch.zeros(B, H, L, span, dtype=weights.dtype, device=weights.device)
        per_interval.scatter_add_(-1, index, weights)
        return weights @ v + torch.einsum("bhls,shd->bhld", per_interval, self.values.weight.view(span, H, d))
