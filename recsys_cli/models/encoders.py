"""Sequence encoders: one interface, ``forward(inputs: EncoderInput) -> hidden states``.

Every encoder maps an :class:`~recsys_cli.contract.encoder_input.EncoderInput` (embedded inputs
``x`` [B, L, D], left-padded, newest event last; a validity mask [B, L]; the events' times) to
hidden states [B, L, D], and says whether they are causal (``causal``: position i depends on
positions <= i only; the recurrent encoders and the default Transformer are, ``model/encoder=bert``
is not). An encoder reads the fields it needs and ignores the others. The inputs arrive with
dropout already applied (by the recommender, once): an encoder does not drop them again (dropping
twice slowed the Transformer's first epochs, see the README's speed section). Which encoder is used
is chosen by config (``model/encoder=gru|lstm|transformer|bert``), built with ``_target_``; the
recommender never branches on the encoder type. What the Transformer's attention reads of time
(``time_bias``, ``head_windows``) lives in :mod:`recsys_cli.models.time_attention`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.contract.encoder_input import EncoderInput
from recsys_cli.contract.params import Fraction, NonNegative, PositiveInt
from recsys_cli.errors import ConfigError
from recsys_cli.models.time_attention import (
    HSTUBias,
    TiSASRecIntervals,
    head_window_mask,
    hstu_buckets,
    parse_head_windows,
    time_gaps,
    tisasrec_intervals,
)

# Splitting pays only when it saves enough: each group is a pass of its own through the encoder
# (on 2 CPU cores 4 equal-count groups saving 6% of the positions made a step 1.5% slower; the
# best split on the ML-1M-sized log at max_len 200, saving 30%, made it take 0.79x the time).
MIN_SAVED_SHARE = 0.1


def length_split(lengths: np.ndarray, groups: int) -> list[int]:
    """Where to cut ascending ``lengths`` into ``groups`` consecutive groups so that the positions
    computed, the sum over groups of (rows x longest length), are fewest: the group ends, the
    last one ``len(lengths)``. Exact, by dynamic programming over the cut points (B^2 per group).
    """
    B = len(lengths)
    first, end = np.arange(B)[:, None], np.arange(1, B + 1)[None, :]
    # cost[i, j - 1]: rows i..j-1 as one group, (j - i) rows of the length lengths[j - 1]
    cost = np.where(first < end, (end - first) * lengths[None, :].astype(np.float64), np.inf)
    best = np.full(B + 1, np.inf)  # best[j]: the fewest positions of rows 0..j-1 in g groups
    best[0] = 0.0
    best_first = []  # per group count g: for each end j, where the last of the g groups starts
    for _ in range(groups):
        total = best[:B, None] + cost  # [first row of the last group, its end - 1]
        start = total.argmin(0)
        best_first.append(start)
        best = np.concatenate([[np.inf], total[start, np.arange(B)]])
    group_ends = [B]
    for start in reversed(best_first[1:]):
        group_ends.append(int(start[group_ends[-1] - 1]))
    return group_ends[::-1]


# not traced by torch.compile (trainer.compile=true): the split is host-side numpy work on the
# batch's lengths; traced, the group widths become symbolic slices, and torch 2.13 on CPU fails on
# them (attention dropout: "InductorError: Exponent must be non-negative"; from_numpy under
# inference_mode: a guard error). ``encode`` itself, called from here, is still compiled.
@torch.compiler.disable(recursive=False)
def in_length_groups(
    encode: Callable[[EncoderInput], torch.Tensor],
    inputs: EncoderInput,
    groups: int,
) -> torch.Tensor:
    """``encode(inputs)`` of left-padded rows, computed on up to ``groups`` groups of rows of
    similar length, each cut to its own longest row: the same states (an encoder's states do not
    depend on the padding before a sequence), with less work spent on padding. The groups are
    the split of the length-sorted rows that computes the fewest positions (:func:`length_split`).

    The batch's cases stay together (one loss, one step): only the encoder's computation is
    split, unlike bucketing (``data.bucket_pool``), which changes which cases share a batch. A
    batch whose split would save less than ``MIN_SAVED_SHARE`` of its positions runs whole.
    """
    mask = inputs.mask
    B, L = mask.shape
    if groups <= 1 or B < 2 * groups:
        return encode(inputs)
    lengths = L - (mask.cumsum(1) == 0).sum(1)  # from each row's first event to the newest
    lengths, order = torch.sort(lengths.clamp(min=1), stable=True)
    lengths = lengths.cpu().numpy()
    ends = length_split(lengths, groups)
    starts = [0, *ends[:-1]]
    widths = [int(lengths[end - 1]) for end in ends]
    if sum(w * (e - s) for w, s, e in zip(widths, starts, ends, strict=True)) > (1 - MIN_SAVED_SHARE) * B * L:
        return encode(inputs)
    out = []
    for width, start, end in zip(widths, starts, ends, strict=True):
        rows = order[start:end]
        h = encode(inputs.select(rows, L - width))  # every per-position field cut alike
        out.append(F.pad(h, (0, 0, L - width, 0)))  # the padding's states are zero
    return torch.cat(out).index_select(0, torch.argsort(order))


class RNNEncoder(nn.Module):
    """GRU or LSTM over the sequence (GRU4Rec-style when used with the dense objective); reads
    ``x`` and ``mask`` only."""

    causal = True

    def __init__(
        self,
        dim: PositiveInt,
        num_layers: PositiveInt = 1,
        dropout: Fraction = 0.1,
        cell: Literal["gru", "lstm"] = "gru",
    ):
        super().__init__()
        cells = {"gru": nn.GRU, "lstm": nn.LSTM}
        if cell not in cells:
            raise ConfigError(f"model.encoder.cell={cell!r}: valid cells are {sorted(cells)}")
        self.rnn = cells[cell](
            dim,
            dim,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, inputs: EncoderInput) -> torch.Tensor:
        x, mask = inputs.x, inputs.mask
        # Left padding, rotated to the right before the recurrence and back after it: every
        # sequence starts from the zero state at its first event, however much padding precedes it
        # (so a batch trimmed of common padding gives the same states), and the padding comes
        # after the real steps, where it cannot reach them.
        L = x.shape[1]
        shift = L - mask.sum(1, keepdim=True)  # [B, 1] padded steps of each row
        steps = torch.arange(L, device=x.device).unsqueeze(0)
        to_front = ((steps + shift) % L).unsqueeze(-1).expand_as(x)
        out, _ = self.rnn((x * mask.unsqueeze(-1)).gather(1, to_front))
        back = ((steps - shift) % L).unsqueeze(-1).expand(-1, -1, out.shape[-1])
        return self.norm(out.gather(1, back)) * mask.unsqueeze(-1)


class CausalSelfAttentionBlock(nn.Module):
    """Transformer block with multi-head attention under a given mask (SASRec-like; causal or not
    as the encoder's mask says).

    ``norm="pre"`` normalises each sub-layer's input (x + f(LN(x)); the encoder adds a final
    LayerNorm); ``norm="post"`` normalises after each residual sum (LN(x + f(x))), as the original
    Transformer and SASRec do. ``time`` (built by the encoder, None when off) is what the
    attention reads of time: an :class:`HSTUBias` added to the logits, or
    :class:`TiSASRecIntervals` added to the keys and values.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dropout: float,
        ffn_mult: int = 4,
        norm: Literal["pre", "post"] = "post",
        activation: Literal["gelu", "relu"] = "relu",
        time: Callable[[], nn.Module] | None = None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"model.encoder.num_heads={num_heads} must divide model.dim={dim}")
        if norm not in ("pre", "post"):
            raise ConfigError(f"model.encoder.norm={norm!r}: valid values are 'pre' and 'post'")
        acts = {"gelu": nn.GELU, "relu": nn.ReLU}
        if activation not in acts:
            raise ConfigError(
                f"model.encoder.activation={activation!r}: valid values are {sorted(acts)}"
            )
        self.num_heads, self.pre_norm = num_heads, norm == "pre"
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim),
            acts[activation](),
            nn.Dropout(dropout),
            nn.Linear(ffn_mult * dim, dim),
        )
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout
        # as nn.MultiheadAttention (and so SASRec's usual PyTorch code): Xavier-uniform input
        # projections, zero biases; nn.Linear's default (uniform +-1/sqrt(D), random biases) left
        # ml-100k at max_len 200 8-10% below the reference after 30 epochs (README, speed section)
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.proj.bias)
        # built after every other weight: off, it draws nothing and the block starts as before
        self.time = time() if time is not None else None

    def attend(self, x: torch.Tensor, attn_mask: torch.Tensor, time_index: torch.Tensor | None = None) -> torch.Tensor:
        """``attn_mask`` [B, 1 or h, L, L] bool (True: may attend); ``time_index`` [B, L, L] the
        gap buckets or intervals that ``self.time`` reads."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, D // self.num_heads).unbind(2)
        # [B, L, h, d] -> [B, h, L, d]
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        dropout = self.attn_dropout if self.training else 0.0
        if isinstance(self.time, TiSASRecIntervals):
            a = self.time.attend(q, k, v, attn_mask, time_index, dropout)
        else:
            if self.time is not None:  # [B, h, L, L] added to the logits, -inf where masked
                attn_mask = self.time(time_index).masked_fill(~attn_mask, float("-inf"))
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        return self.dropout(self.proj(a.transpose(1, 2).reshape(B, L, D)))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, time_index: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attend(self.norm1(x), attn_mask, time_index)
            return x + self.dropout(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.attend(x, attn_mask, time_index))
        return self.norm2(x + self.dropout(self.ffn(x)))


class TransformerEncoder(nn.Module):
    """Transformer with learned positions counted back from the newest event; causal (SASRec) or
    bidirectional (``causal=false``: BERT4Rec, trained by ``task=cloze``).

    The defaults are the config's (``conf/model/encoder/transformer.yaml``): post-norm blocks with
    ReLU, SASRec's. Runs saved before ``norm`` and ``activation`` were keys trained pre-norm GELU
    blocks; reading their checkpoints fills those two keys in
    (:func:`recsys_cli.checkpoints.fill_encoder_keys`). ``time_bias`` and ``head_windows`` put the
    events' times inside attention (:mod:`recsys_cli.models.time_attention`); off (None), they
    build nothing and the encoder computes what it computed before they existed.
    """

    def __init__(
        self,
        dim: PositiveInt,
        max_len: PositiveInt,
        num_layers: PositiveInt = 2,
        num_heads: PositiveInt = 2,
        dropout: Fraction = 0.2,
        ffn_mult: PositiveInt = 4,
        norm: Literal["pre", "post"] = "post",
        activation: Literal["gelu", "relu"] = "relu",
        length_groups: PositiveInt = 1,
        position_init_std: NonNegative | None = 0.02,
        causal: bool = True,
        time_bias: Literal["hstu", "tisasrec"] | None = None,
        time_buckets: PositiveInt = 128,
        time_span: PositiveInt = 256,
        head_windows: list | None = None,
    ):
        super().__init__()
        if time_bias not in (None, "hstu", "tisasrec"):
            raise ConfigError(f"model.encoder.time_bias={time_bias!r}: valid values are null, 'hstu' and 'tisasrec'")
        self.length_groups, self.causal = length_groups, bool(causal)
        self.time_bias, self.time_buckets, self.time_span = time_bias, time_buckets, time_span
        self.head_windows = parse_head_windows(head_windows, num_heads)
        self.positions = nn.Embedding(max_len, dim)
        # N(0, 0.02^2) as the item table (model.init_std); None: nn.Embedding's N(0, 1), the
        # initialisation before 2026-12-06 (as large as an item's input: positions, the same for
        # every user, then drowned the items and training sat on the popularity level)
        if position_init_std is not None:
            nn.init.normal_(self.positions.weight, std=position_init_std)
        time = {
            None: None,
            "hstu": lambda: HSTUBias(num_heads, max_len, time_buckets),
            # the interval tables start as the positions (0.02 when those keep N(0, 1))
            "tisasrec": lambda: TiSASRecIntervals(dim, time_span, position_init_std or 0.02),
        }[time_bias]
        self.blocks = nn.ModuleList(
            CausalSelfAttentionBlock(dim, num_heads, dropout, ffn_mult, norm, activation, time)
            for _ in range(num_layers)
        )
        # pre-norm blocks leave the residual stream unnormalised: one LayerNorm closes it; post-norm
        # blocks end in one already
        self.norm = nn.LayerNorm(dim) if norm == "pre" else nn.Identity()

    @property
    def time_setting(self) -> str | None:
        """The setting that needs the events' times (for the error on data without them), or None."""
        if self.time_bias is not None:
            return f"model.encoder.time_bias={self.time_bias}"
        return "model.encoder.head_windows" if self.head_windows is not None else None

    def forward(self, inputs: EncoderInput) -> torch.Tensor:
        return in_length_groups(self._encode, inputs, self.length_groups)

    def _encode(self, inputs: EncoderInput) -> torch.Tensor:
        x, mask = inputs.x, inputs.mask
        B, L, _ = x.shape
        # the newest event (last column) always has the last position, also when a batch has
        # fewer than max_len columns (its common padding trimmed)
        pos = self.positions.weight[-L:]  # [L, D]
        h = (x + pos) * mask.unsqueeze(-1)
        eye = torch.eye(L, dtype=torch.bool, device=x.device)
        allowed = mask[:, None, :]  # [B, 1, L]: valid keys
        if self.causal:
            allowed = torch.ones(L, L, dtype=torch.bool, device=x.device).tril() & allowed
        # [B, 1, L, L]: attend to valid (earlier) events; a padded row attends to itself only so
        # the softmax is defined (its output is masked out downstream).
        attn_mask = (allowed | eye).unsqueeze(1)
        time_index = None
        if self.time_setting is not None:
            times = self._times(inputs)
            if self.head_windows is not None:  # [B, h, L, L]: each head inside its own window
                attn_mask = (attn_mask & head_window_mask(times, self.head_windows, self.causal)) | eye
            if self.time_bias == "hstu":
                time_index = hstu_buckets(time_gaps(times), self.time_buckets)
            elif self.time_bias == "tisasrec":
                time_index = tisasrec_intervals(times, mask, self.time_span, self.causal)
        for block in self.blocks:
            h = block(h, attn_mask, time_index)
        return self.norm(h) * mask.unsqueeze(-1)

    def _times(self, inputs: EncoderInput) -> torch.Tensor:
        if inputs.times is None:
            raise ConfigError(f"{self.time_setting} needs the events' timestamps, and the data has none")
        return inputs.times
