"""Training and evaluation speed, memory and time-to-quality of the product's sequence models
against a plain reference SASRec, in one process, at identical sizes, on identical batches.

    python scripts/bench_speed.py --preset tiny                       # seconds (the test suite's)
    python scripts/bench_speed.py --preset ml1m --epochs 10           # ~1M events, 3,500 items
    python scripts/bench_speed.py --preset shop100k --device cuda     # 100k items (sampled softmax)
    python scripts/bench_speed.py --preset shop1m --device cuda --epochs 2 --eval-batches 40
    python scripts/bench_speed.py --preset ml1m --contenders reference,transformer --levels 0.05,0.1
    python scripts/bench_speed.py --preset ml100k --contenders reference,transformer --epochs 40

Contenders (``--contenders``, comma-separated; default all seven):

- ``reference``: SASRec written straightforwardly in PyTorch in this file (:class:`ReferenceSASRec`):
  learned absolute positions, ``--layers`` post-LN ``nn.TransformerEncoderLayer`` blocks (one
  head, feed-forward width = dim, ReLU), a causal mask with padded keys masked, full cross-entropy
  over the whole catalogue computed at every one of the B x L positions (padded targets ignored),
  the item embedding shared with the output layer, Adam with lr 1e-3;
- ``transformer``, ``gru``, ``lstm``: the product (``model/encoder=...``, ``scales=none``), built
  from ``conf/`` with :func:`recsys_cli.compose.compose_train` and
  :func:`recsys_cli.builders.build_module`, sized like the reference (``model.dim``, 2 encoder
  layers, transformer with 1 head and ``ffn_mult=1``, ``model.dropout=0.2``, ``optimizer.lr=1e-3``;
  the product's optimizer is AdamW with weight decay 0, i.e. Adam); everything else is the
  product's default (event-type embeddings, gate fusion...);
- ``transformer+scales``, ``gru+scales``, ``lstm+scales``: the same with
  ``scales=session_day_month_all``.

Every contender trains on the batches of the product's data module (``build_datamodule``; the
training cases do not depend on the scales, and the batch order is the sampler's, seeded by
``seed`` and the epoch), so all of them see the same cases in the same order; a batch is gathered
once per data module and given to every contender that reads it. The training loop is this
file's, the same for every contender: per batch ``zero_grad``, loss, ``backward``, ``step``, timed
with ``time.perf_counter`` (synchronised on CUDA). The contenders alternate step by step (the order
rotates every step) so machine load affects them alike; each has its own random stream (seeded
with ``torch.manual_seed(seed)`` before it is built, then saved and restored around its steps).
After every epoch each contender is evaluated on the validation cases by full ranking with the
product's :class:`~recsys_cli.training.metrics.RankingMetrics` (the product through its own
``_eval_start`` / ``_eval_step`` / ``_eval_end``; the reference through the same metrics class, the
same ``seen`` filtering and the same targets), again alternating batch by batch.

Measurements (all in the JSON, ``--out``, written atomically after every epoch):

- training: supervised positions (``targets > 0``) per second of step time, seconds per epoch
  (step time + the time to gather that contender's batches), achieved GFLOP/s and its fraction of
  the machine's measured matmul GFLOP/s (below);
- validation NDCG@10 after every epoch, and the training seconds (cumulative epoch seconds, without
  evaluation) at which each ``--levels`` value was first reached (``null``: not reached);
- evaluation: users per second (forward, scoring the whole catalogue, ranking metrics), its GFLOP/s;
- memory: the persistent training state (parameters, gradients and Adam's two moments: 4 x the
  parameter bytes) and the transient peak of one training step and one evaluation batch. On CPU
  that is the resident set size (psutil), sampled every millisecond by a thread during two
  untimed forward+backward probes (no optimizer step, so the probes do not change the weights)
  run before training, after ``malloc_trim``; the RSS is process-wide, so the transient is the
  peak minus the RSS right before the probe. On CUDA the same probes read
  ``torch.cuda.max_memory_allocated`` (reset before each probe) minus ``torch.cuda.memory_allocated``
  before it; the run's overall CUDA peak is in ``machine.cuda_max_memory_allocated_mb``;
- padding: the share of the B x L encoder positions that are padding and the share of positions
  without a target, over the training batches: the product's batches come with the padding
  common to a whole batch trimmed (``L`` <= max_len; with ``data.bucket_pool`` the cases of a
  batch have similar lengths, ``--override data.bucket_pool=50``), the reference reads every batch
  left-padded back to max_len (its share is reported as the untrimmed one);
- the machine: GFLOP/s of timed square float32 matmuls (``--matmul-size``; the best of
  ``--matmul-reps``, measured before and after training, the better one is the "peak").

FLOPs are counted analytically (multiply-add = 2 FLOPs; gathers, element-wise work, softmaxes,
the ranking's comparisons and top-k are not counted), with B cases, L = max_len positions, D = dim,
N items, M supervised positions of the batch, F = ffn_mult * D, K sampled negatives:

- transformer encoder, per layer and position: QKV 6 D^2 + output projection 2 D^2 + FFN 4 D F
  + attention scores and mixing 4 L D (the full L x L, as SDPA computes it under a mask);
- GRU per layer and position 12 D^2 (3 gates x (input + hidden) D x D), LSTM 16 D^2;
- time-window scales (shared encoder, attention pooling), per position: query/key/value 6 D^2,
  one L x L score matrix 2 L D, S scales' mixing 2 S L D, statistics 2 S F_stats D, gate fusion
  2 S D^2 (the bags' prefix sums are element-wise: not counted);
- output layer, training: reference 2 B L D N (logits at every position), product full CE
  2 M D N (supervised positions only), product sampled softmax 2 M D (K + 1);
- training step = 3 x forward (backward = 2 x forward); recomputation (the product's streaming
  cross-entropy over catalogues above its item chunk) is not counted, as in MFU conventions;
- evaluation batch = B L x (encoder + scales per position) + 2 B D N (scoring the newest position).

Presets (``--preset``): ``ml1m`` (synthetic log sized like MovieLens-1M: 6,000 users, 3,500
items, ~1M events; max_len 200), ``shop100k`` and ``shop1m`` (shop-like logs, ~17 events per user,
100k / 1M items, max_len 50; the product trains with ``objective/next_item=sampled_softmax``
there, the reference with full cross-entropy where its [B x L, N] logits fit in memory, else it is
skipped with the reason printed), ``tiny`` (a few hundred users and items, one epoch of two
steps: the test suite's), ``ml100k`` (MovieLens-100k's RecBole files, ``--data-path``, default
``../shared/data/ml-100k``; max_len 200). All use dim 64 (tiny: 16), 2 layers, batch 128 (tiny:
32). The synthetic presets' data come from the product's synthetic reader; the real counts after
preparation are reported.
Prepared data are cached in ``--cache-dir`` (default: a folder in the system's temp directory),
so a re-run does not regenerate them.

Prints a Markdown table with ratios to the reference (throughput, seconds per epoch, evaluation
users per second, memory) and writes the JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

try:  # psutil is a dev dependency; without it the RSS comes from /proc
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from recsys_cli.builders import build_datamodule, build_module, resolve_filter_seen  # noqa: E402
from recsys_cli.compose import compose_train  # noqa: E402
from recsys_cli.contract.batch import eval_targets  # noqa: E402
from recsys_cli.training.metrics import RankingMetrics  # noqa: E402

ENCODERS = ("transformer", "gru", "lstm")
SCALES_ON = "session_day_month_all"
ALL_CONTENDERS = ("reference", *ENCODERS, *(f"{e}+scales" for e in ENCODERS))
METRIC = "ndcg@10"


@dataclass(frozen=True)
class Preset:
    reader: dict[str, Any]
    preparation: dict[str, Any]
    max_len: int
    dim: int = 64
    layers: int = 2
    batch_size: int = 128
    eval_batch_size: int = 256
    epochs: int = 10
    objective: str = "full_ce"
    max_steps: int | None = None
    eval_batches: int | None = None
    matmul_size: int = 2048
    note: str = ""
    # a real dataset instead of the synthetic reader: the data config (e.g. "recbole") and the
    # default folder, relative to the repository (--data-path overrides it)
    data: str = "synthetic"
    data_path: str | None = None


PRESETS: dict[str, Preset] = {
    # ~166 events per user (33 sessions of ~5 events) x 6,000 users ~ 1M events, like MovieLens-1M
    "ml1m": Preset(
        reader={
            "num_users": 6000,
            "num_items": 3500,
            "num_categories": 20,
            "sessions_per_user": 33.0,
            "session_length": 5.0,
        },
        preparation={"min_user_events": 5, "min_item_events": 5},
        max_len=200,
        epochs=10,
        note="synthetic log sized like MovieLens-1M",
    ),
    # shop-like: few sessions per user (~17 events), a large catalogue; every item kept
    "shop100k": Preset(
        reader={
            "num_users": 100_000,
            "num_items": 100_000,
            "num_categories": 100,
            "sessions_per_user": 4.0,
            "session_length": 4.0,
        },
        preparation={"min_user_events": 5, "min_item_events": 1},
        max_len=50,
        epochs=5,
        objective="sampled_softmax",
        note="shop-like log, 100k items; the product trains with sampled softmax",
    ),
    "shop1m": Preset(
        reader={
            "num_users": 600_000,
            "num_items": 1_000_000,
            "num_categories": 1000,
            "sessions_per_user": 4.0,
            "session_length": 4.0,
        },
        preparation={"min_user_events": 5, "min_item_events": 1},
        max_len=50,
        epochs=3,
        objective="sampled_softmax",
        note="shop-like log, 1M items; the product trains with sampled softmax",
    ),
    # MovieLens-100k (RecBole atomic files, not in the repository) at SASRec's ML-1M sizes
    "ml100k": Preset(
        reader={},
        preparation={},
        max_len=200,
        epochs=40,
        data="recbole",
        data_path="../shared/data/ml-100k",
        note="MovieLens-100k, max_len 200",
    ),
    "tiny": Preset(
        reader={
            "num_users": 300,
            "num_items": 200,
            "num_categories": 5,
            "days": 20,
            "sessions_per_user": 6.0,
            "session_length": 4.0,
        },
        preparation={"min_user_events": 5, "min_item_events": 2},
        max_len=20,
        dim=16,
        batch_size=32,
        eval_batch_size=64,
        epochs=1,
        max_steps=2,
        eval_batches=2,
        matmul_size=256,
        note="smoke test",
    ),
}


# ------------------------------------------------------------------------------------------------
# machine: device helpers, memory, matmul throughput
# ------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int:
    if psutil is not None:
        return psutil.Process().memory_info().rss
    with open("/proc/self/statm") as f:  # pragma: no cover
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so the RSS before a probe is live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class MemoryProbe:
    """Peak memory of the code inside ``with``: CUDA allocator peak, or RSS sampled every ``period``
    seconds by a thread (CPU). ``base`` and ``peak`` in bytes."""

    def __init__(self, device: torch.device, period: float = 0.001):
        self.device, self.period = device, period
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.period)

    def __enter__(self) -> MemoryProbe:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = self.peak = torch.cuda.memory_allocated(self.device)
        else:
            malloc_trim()
            self.base = self.peak = rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = max(self.peak, rss_bytes())
            self._stop.set()
            assert self._thread is not None
            self._thread.join()

    @property
    def extra(self) -> int:
        return max(self.peak - self.base, 0)


def available_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if psutil is not None:
        return psutil.virtual_memory().available
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # pragma: no cover


def matmul_gflops(device: torch.device, size: int, reps: int) -> dict[str, Any]:
    """GFLOP/s of ``reps`` timed [size, size] @ [size, size] float32 matmuls (after one warm-up)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * size**3
    return {
        "size": size,
        "reps": reps,
        "seconds": times,
        "gflops_best": flops / min(times) / 1e9,
        "gflops_median": flops / statistics.median(times) / 1e9,
    }


def mb(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 2)


# ------------------------------------------------------------------------------------------------
# FLOPs (see the module docstring for the formulas)
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# the reference SASRec
# ------------------------------------------------------------------------------------------------
class ReferenceSASRec(nn.Module):
    """SASRec as usually written: item + learned absolute position embeddings, post-LN Transformer
    blocks with a causal mask, full cross-entropy over the catalogue at every position, the item
    embedding shared with the output layer."""

    def __init__(
        self, num_items: int, max_len: int, dim: int, blocks: int, heads: int, dropout: float
    ):
        super().__init__()
        self.num_items, self.max_len, self.dim, self.heads = num_items, max_len, dim, heads
        self.item = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.item.weight, std=dim**-0.5)  # unit-norm items: sane initial logits
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.position = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                dim_feedforward=dim,
                dropout=dropout,
                activation="relu",
                batch_first=True,
                norm_first=False,
            )
            for _ in range(blocks)
        )
        self.register_buffer(
            "future", torch.ones(max_len, max_len, dtype=torch.bool).triu(1), persistent=False
        )

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """[B, L] item ids (left-padded with 0) -> [B, L, D] states."""
        B, L = items.shape
        valid = items > 0
        x = self.item(items) * self.dim**0.5 + self.position.weight[:L]
        x = self.dropout(x) * valid.unsqueeze(-1)
        # True = may not attend: future positions and padded keys; a padded query attends to
        # itself only (so its softmax is defined; its state is never scored)
        eye = torch.eye(L, dtype=torch.bool, device=items.device)
        blocked = (self.future[:L, :L] | ~valid[:, None, :]) & ~eye
        mask = blocked.repeat_interleave(self.heads, dim=0)  # [B * heads, L, L]
        for block in self.blocks:
            x = block(x, src_mask=mask)
        return x

    def loss(self, items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the supervised positions (``targets > 0``); logits at all B x L."""
        logits = self.encode(items) @ self.item.weight[1:].T  # [B, L, N]
        return F.cross_entropy(
            logits.reshape(-1, self.num_items), (targets - 1).reshape(-1), ignore_index=-1
        )

    def scores(self, items: torch.Tensor) -> torch.Tensor:
        """[B, N + 1] scores after the newest position; column 0 (padding) is -inf."""
        scores = self.encode(items)[:, -1] @ self.item.weight.T
        scores[:, 0] = float("-inf")
        return scores


# ------------------------------------------------------------------------------------------------
# contenders
# ------------------------------------------------------------------------------------------------
def left_pad(x: torch.Tensor, length: int) -> torch.Tensor:
    """[B, T] -> [B, length] with zero columns in front: the reference reads every batch at the
    full ``max_len`` (the product's data module trims the padding common to a batch)."""
    return F.pad(x[:, -length:], (length - min(x.shape[1], length), 0))


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass
class Contender:
    """One model under test: how it trains on a batch and evaluates, and what was measured."""

    name: str
    kind: str  # reference | product
    dm_key: str  # the data module whose batches it reads
    model: nn.Module
    optimizer: torch.optim.Optimizer
    flops: FlopModel
    device: torch.device
    seed: int
    overrides: list[str] = field(default_factory=list)
    metrics: RankingMetrics | None = None  # the reference's (the product's module has its own)
    filter_seen: bool = True
    rng: tuple[torch.Tensor, torch.Tensor | None] | None = None
    steps: int = 0
    record: dict[str, Any] = field(default_factory=dict)

    # -- random streams: each contender's own, whatever the others draw ------------------------
    def enter_rng(self) -> None:
        if self.rng is None:
            return
        torch.set_rng_state(self.rng[0])
        if self.rng[1] is not None:
            torch.cuda.set_rng_state(self.rng[1], self.device)

    def leave_rng(self) -> None:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        self.rng = (torch.get_rng_state(), cuda)

    # -- training ------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "reference":
            L = self.model.max_len
            return self.model.loss(left_pad(batch["items"], L), left_pad(batch["targets"], L))
        self.model.objective.set_step(self.steps)
        return self.model.training_loss(batch).loss

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One timed optimiser step (transfer, zero_grad, loss, backward, step); its seconds."""
        self.enter_rng()
        sync(self.device)
        t0 = time.perf_counter()
        batch = to_device(batch, self.device)
        self.optimizer.zero_grad()
        loss = self.loss(batch)
        loss.backward()
        self.optimizer.step()
        sync(self.device)
        seconds = time.perf_counter() - t0
        self.leave_rng()
        self.steps += 1
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(
                f"{self.name}: the training loss is {float(loss.detach())} at step {self.steps}"
            )
        return seconds

    def probe_step(self, batch: dict[str, torch.Tensor]) -> None:
        """Forward and backward without an optimizer step (memory probe; weights unchanged)."""
        self.enter_rng()
        batch = to_device(batch, self.device)
        self.loss(batch).backward()
        self.optimizer.zero_grad(set_to_none=True)
        self.leave_rng()

    def epoch_start(self) -> None:
        self.model.train()
        if self.kind == "product":
            self.model.on_train_epoch_start()  # refreshes the item table (a no-op for id items)

    # -- evaluation ----------------------------------------------------------------------------
    def eval_start(self) -> None:
        self.model.eval()
        if self.kind == "product":
            self.model._eval_start()
        else:
            self.metrics.reset()

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> float:
        sync(self.device)
        t0 = time.perf_counter()
        batch = to_device(batch, self.device)
        if self.kind == "product":
            self.model._eval_step(batch)
        else:
            scores = self.model.scores(left_pad(batch["items"], self.model.max_len))
            seen = batch["seen"] if self.filter_seen else None
            self.metrics.update(scores, eval_targets(batch), seen, overwrite=True)
        sync(self.device)
        return time.perf_counter() - t0

    def eval_end(self) -> tuple[dict[str, float], float]:
        t0 = time.perf_counter()
        if self.kind == "product":
            self.model._eval_end("val")
            values = dict(self.model.results["val"])
        else:
            values = self.metrics.compute() if self.metrics.count else {}
            self.metrics.reset()
        self.model.train()
        return values, time.perf_counter() - t0

    def persistent_bytes(self) -> int:
        """Parameters, their gradients and Adam's two moments."""
        return 4 * sum(
            p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad
        )


def parse_contender(name: str) -> tuple[str, str]:
    """``transformer+scales`` -> (``transformer``, ``session_day_month_all``)."""
    encoder, _, extra = name.partition("+")
    if name not in ALL_CONTENDERS:
        raise SystemExit(f"unknown contender {name!r}; choose from {', '.join(ALL_CONTENDERS)}")
    return encoder, SCALES_ON if extra == "scales" else "none"


def common_overrides(preset: Preset, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """Data, size and optimiser overrides shared by every contender's config."""
    over = [
        f"paths.run_dir={run_dir}",
        f"paths.cache_dir={args.cache_dir}",
        f"seed={args.seed}",
        f"data={preset.data}",
        f"data.max_len={preset.max_len}",
        f"data.batch_size={preset.batch_size}",
        f"data.eval_batch_size={preset.eval_batch_size}",
        f"model.dim={preset.dim}",
        "model.dropout=0.2",
        "optimizer.lr=0.001",
    ]
    if preset.data_path is not None:
        path = Path(args.data_path or REPO / preset.data_path).resolve()
        if not path.is_dir():
            raise SystemExit(f"--preset {args.preset}: no dataset folder {path}; give --data-path")
        over.append(f"data.path={path}")
    over += [f"data.reader.{k}={v}" for k, v in preset.reader.items()]
    over += [f"data.preparation.{k}={v}" for k, v in preset.preparation.items()]
    return over


def product_overrides(
    preset: Preset, args: argparse.Namespace, run_dir: Path, encoder: str, scales: str
) -> list[str]:
    over = [
        *common_overrides(preset, args, run_dir),
        f"model/encoder={encoder}",
        f"scales={scales}",
        f"objective/next_item={preset.objective}",
        f"model.encoder.num_layers={preset.layers}",
    ]
    if encoder == "transformer":
        over += ["model.encoder.num_heads=1", "model.encoder.ffn_mult=1"]
    return over + list(args.override)


def compose(overrides: list[str]) -> DictConfig:
    cfg = compose_train(overrides)
    OmegaConf.resolve(cfg)
    return cfg


def product_flops(cfg: DictConfig, spec: Any, encoder: str) -> FlopModel:
    enc = cfg.model.encoder
    objective = str(cfg.objective.next_item._target_).rsplit(".", 1)[-1]
    output = {"FullSoftmaxCE": "full_ce", "SampledSoftmax": "sampled_softmax"}.get(
        objective, "full_ce"
    )
    scale_set = spec.scales
    return FlopModel(
        encoder=encoder,
        dim=int(cfg.model.dim),
        layers=int(enc.num_layers),
        ffn=int(enc.get("ffn_mult", 1)) * int(cfg.model.dim),
        num_items=spec.num_items,
        output=output,
        negatives=int(cfg.objective.next_item.get("num_negatives", 0)),
        scales=len(scale_set.windows),
        scale_stats=len(spec.stat_names) if scale_set.statistics else 0,
        attention_pooling=scale_set.pooling == "attention",
    )


def reference_fits(preset: Preset, num_items: int, device: torch.device) -> tuple[bool, str]:
    """Whether the reference's [B x L, N] logits fit: logits, log-softmax, their two gradients."""
    need = 4 * preset.batch_size * preset.max_len * num_items * 4
    free = available_memory(device)
    if need > 0.7 * free:
        return False, (
            f"full cross-entropy needs about {need / 2**30:.1f} GiB for the [B x L, N] = "
            f"[{preset.batch_size * preset.max_len}, {num_items}] logits and their gradients, "
            f"{free / 2**30:.1f} GiB is available on {device.type}"
        )
    return True, ""


# ------------------------------------------------------------------------------------------------
# the benchmark
# ------------------------------------------------------------------------------------------------
def batches(loader: Any, limit: int | None) -> Iterator[dict[str, torch.Tensor]]:
    """The loader's batches, or ``limit`` of them evenly spaced over the epoch: evaluation goes by
    case length, so the first batches alone would be the shortest histories."""
    if limit is None or limit >= len(loader):
        return iter(loader)
    stride = len(loader) / limit
    ids = list(loader.sampler)  # the case ids of every batch; only the wanted ones are gathered
    return (loader.dataset[ids[int(i * stride)]] for i in range(limit))


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (a temp file in the same folder, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def time_to_levels(
    ndcg: list[float], cumulative: list[float], levels: list[float]
) -> dict[str, Any]:
    out = {}
    for level in levels:
        hit = next((i for i, v in enumerate(ndcg) if v >= level), None)
        out[f"{level:g}"] = None if hit is None else {"seconds": cumulative[hit], "epoch": hit + 1}
    return out


def summarise(c: Contender, levels: list[float], peak_gflops: float) -> dict[str, Any]:
    epochs = c.record["epochs"]
    step_s = sum(e["step_seconds"] for e in epochs)
    epoch_s = [e["epoch_seconds"] for e in epochs]
    positions = sum(e["positions"] for e in epochs)
    train_flops = sum(e["train_flops"] for e in epochs)
    eval_s = sum(e["eval_seconds"] for e in epochs)
    users = sum(e["eval_users"] for e in epochs)
    eval_flops = sum(e["eval_flops"] for e in epochs)
    train_gf = train_flops / step_s / 1e9 if step_s else 0.0
    eval_gf = eval_flops / eval_s / 1e9 if eval_s else 0.0
    ndcg = [e[METRIC] for e in epochs]
    cumulative = list(itertools.accumulate(epoch_s))
    padded = sum(e["padding_positions"] for e in epochs)
    no_target = sum(e["positions_without_target"] for e in epochs)
    total = sum(e["encoder_positions"] for e in epochs)
    mem = c.record["memory"]
    return {
        "positions_per_epoch": [e["positions"] for e in epochs],
        "train_positions_per_s": positions / step_s if step_s else 0.0,
        "train_positions_per_s_with_data": positions / sum(epoch_s) if sum(epoch_s) else 0.0,
        "seconds_per_epoch": statistics.fmean(epoch_s) if epoch_s else 0.0,
        "step_seconds_per_epoch": step_s / len(epochs) if epochs else 0.0,
        "train_gflops_per_s": train_gf,
        "train_peak_fraction": train_gf / peak_gflops if peak_gflops else None,
        "eval_users_per_s": users / eval_s if eval_s else 0.0,
        "eval_gflops_per_s": eval_gf,
        "eval_peak_fraction": eval_gf / peak_gflops if peak_gflops else None,
        "ndcg@10": ndcg,
        "best_ndcg@10": max(ndcg) if ndcg else None,
        "time_to_level": time_to_levels(ndcg, cumulative, levels),
        "padding_share": padded / total if total else 0.0,
        "no_target_share": no_target / total if total else 0.0,
        "memory_mb": mem["persistent_mb"]
        + max(mem["train_step_extra_mb"], mem["eval_batch_extra_mb"]),
    }


def add_ratios(results: dict[str, dict]) -> None:
    ref = results.get("reference", {}).get("summary")
    for res in results.values():
        s = res.get("summary")
        if s is None:
            continue
        if ref is None:
            s["ratios_to_reference"] = None
            continue

        def ratio(key: str, s: dict = s) -> float | None:
            return s[key] / ref[key] if ref[key] else None

        s["ratios_to_reference"] = {
            "throughput": ratio("train_positions_per_s"),
            "throughput_with_data": ratio("train_positions_per_s_with_data"),
            "seconds_per_epoch": ratio("seconds_per_epoch"),
            "eval_users_per_s": ratio("eval_users_per_s"),
            "memory": ratio("memory_mb"),
        }


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(payload: dict) -> str:
    levels = payload["config"]["levels"]
    head = [
        "contender", "pos/s", "x ref", "s/epoch", "x ref", "train GFLOP/s", "% peak",
        "eval users/s", "x ref", "eval % peak", "mem MB", "x ref", "NDCG@10 (last)", "best",
        *(f"s to {level:g}" for level in levels),
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in payload["contenders"].items():
        s = res.get("summary")
        if s is None:
            lines.append(f"| {name} | skipped: {res.get('skipped', '?')} |")
            continue
        r = s["ratios_to_reference"] or {}
        ttl = []
        for level in levels:
            t = s["time_to_level"][f"{level:g}"]
            ttl.append("-" if t is None else f"{t['seconds']:.3g} (ep {t['epoch']})")
        row = [
            name,
            fmt(s["train_positions_per_s"], ".0f"), fmt(r.get("throughput")),
            fmt(s["seconds_per_epoch"], ".2f"), fmt(r.get("seconds_per_epoch")),
            fmt(s["train_gflops_per_s"], ".2f"), fmt(100 * (s["train_peak_fraction"] or 0), ".1f"),
            fmt(s["eval_users_per_s"], ".0f"), fmt(r.get("eval_users_per_s")),
            fmt(100 * (s["eval_peak_fraction"] or 0), ".1f"),
            fmt(s["memory_mb"], ".0f"), fmt(r.get("memory")),
            fmt(s["ndcg@10"][-1] if s["ndcg@10"] else None, ".4f"), fmt(s["best_ndcg@10"], ".4f"),
            *ttl,
        ]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    p.add_argument(
        "--contenders",
        default=",".join(ALL_CONTENDERS),
        help=f"comma-separated, of {', '.join(ALL_CONTENDERS)}",
    )
    p.add_argument("--levels", default="0.05,0.10", help="NDCG@10 levels for time to quality")
    p.add_argument("--out", default=None, help="JSON path (default runs/bench_speed/<preset>.json)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="training steps per epoch (default: all; tiny: 2)",
    )
    p.add_argument(
        "--eval-batches",
        type=int,
        default=None,
        help="validation batches per evaluation, evenly spaced over the length-sorted cases (default: all; tiny: 2)",
    )
    p.add_argument(
        "--cache-dir", default=str(Path(tempfile.gettempdir()) / "recsys_bench_speed_cache")
    )
    p.add_argument("--data-path", default=None, help="dataset folder of a real-data preset (ml100k)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--matmul-size", type=int, default=None, help="default: preset's (cuda: 4096)")
    p.add_argument("--matmul-reps", type=int, default=None, help="default: 3 on cpu, 20 on cuda")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra Hydra override for the product (repeatable)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark of ``argv`` (the command line by default); returns what the JSON holds."""
    threads = torch.get_num_threads()
    try:
        return run(parse_args(argv), argv)
    finally:
        torch.set_num_threads(threads)  # in-process callers (the tests) keep their setting


def run(args: argparse.Namespace, argv: list[str] | None) -> dict:
    preset = PRESETS[args.preset]
    epochs = args.epochs if args.epochs is not None else preset.epochs
    max_steps = args.max_steps if args.max_steps is not None else preset.max_steps
    eval_batches = args.eval_batches if args.eval_batches is not None else preset.eval_batches
    levels = [float(x) for x in args.levels.split(",") if x.strip()]
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    for name in names:
        parse_contender(name)
    if len(set(names)) != len(names) or not names:
        raise SystemExit(f"--contenders: give distinct names, got {args.contenders!r}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    out_path = Path(args.out or f"runs/bench_speed/{args.preset}.json")
    mm_size = args.matmul_size or (4096 if device.type == "cuda" else preset.matmul_size)
    mm_reps = args.matmul_reps or (20 if device.type == "cuda" else 3)

    machine: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # off by default: fp32 matmuls throughout
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "matmul_before": matmul_gflops(device, mm_size, mm_reps),
    }
    print(f"# bench_speed --preset {args.preset} ({preset.note}) on {machine['device']}, torch {torch.__version__}, "
          f"{machine['threads']} threads; matmul {mm_size}^2 fp32: {machine['matmul_before']['gflops_best']:.1f} GFLOP/s", flush=True)  # fmt: skip

    payload: dict[str, Any] = {"complete": False, "machine": machine}
    with tempfile.TemporaryDirectory(prefix="bench_speed_run_") as run_dir:
        # -- data modules (one per scales setting) and contenders ------------------------------
        dm_of: dict[str, Any] = {}
        cfg_of: dict[str, DictConfig] = {}

        def datamodule(scales: str) -> Any:
            if scales not in dm_of:
                cfg = compose(product_overrides(preset, args, Path(run_dir), "transformer", scales))
                dm = build_datamodule(cfg)
                dm.load()
                dm_of[scales], cfg_of[scales] = dm, cfg
            return dm_of[scales]

        base_dm = datamodule("none")
        spec = base_dm.spec()
        summary = base_dm.summary()
        contenders: list[Contender] = []
        results: dict[str, dict[str, Any]] = {}
        for name in names:
            encoder, scales = parse_contender(name)
            if name == "reference":
                fits, why = reference_fits(preset, spec.num_items, device)
                if not fits:
                    print(f"reference skipped: {why}", flush=True)
                    results[name] = {"skipped": why}
                    continue
                torch.manual_seed(args.seed)
                model = ReferenceSASRec(
                    spec.num_items, preset.max_len, preset.dim, preset.layers, 1, 0.2
                ).to(device)
                cfg = cfg_of["none"]
                c = Contender(
                    name, "reference", "none", model, torch.optim.Adam(model.parameters(), lr=1e-3),
                    FlopModel("transformer", preset.dim, preset.layers, preset.dim, spec.num_items, "all_positions"),
                    device, args.seed,
                    metrics=RankingMetrics(cfg.metrics.ks, spec.num_items, item_train_counts=spec.item_train_counts),
                    filter_seen=resolve_filter_seen(cfg.metrics.filter_seen, base_dm.load()),
                )  # fmt: skip
            else:
                dm = datamodule(scales)
                overrides = product_overrides(preset, args, Path(run_dir), encoder, scales)
                cfg = compose(overrides)
                torch.manual_seed(args.seed)
                module = build_module(cfg, dm, {})
                module.log = lambda *a, **k: None  # _eval_end logs; there is no Trainer here
                module.to(device)
                c = Contender(
                    name, "product", scales, module, module.configure_optimizers(),
                    product_flops(cfg, dm.spec(), encoder), device, args.seed,
                    overrides=[o for o in overrides if not o.startswith("paths.")], filter_seen=module.filter_seen,
                )  # fmt: skip
            c.leave_rng()  # its own random stream from here on
            c.record = {
                "kind": c.kind,
                "overrides": c.overrides,
                "parameters": sum(p.numel() for p in c.model.parameters()),
                "flop_model": asdict(c.flops),
                "filter_seen": c.filter_seen,
                "epochs": [],
            }
            contenders.append(c)
            results[name] = c.record

        used = {key: dm for key, dm in dm_of.items() if any(c.dm_key == key for c in contenders)}
        if not used:
            raise SystemExit("no contender left to run")
        loaders = {key: dm.train_dataloader() for key, dm in used.items()}
        lengths = {key: len(loader) for key, loader in loaders.items()}
        n_batches = next(iter(lengths.values()))
        steps_per_epoch = min(n_batches, max_steps or n_batches)
        if len(set(lengths.values())) != 1:
            raise RuntimeError(
                f"the data modules disagree on the number of training batches: {lengths}"
            )
        payload["config"] = {
            "preset": args.preset,
            "preset_settings": asdict(preset),
            "epochs": epochs,
            "max_steps": max_steps,
            "steps_per_epoch": steps_per_epoch,
            "eval_batches": eval_batches,
            "levels": levels,
            "device": str(device),
            "seed": args.seed,
            "contenders": names,
            "extra_overrides": list(args.override),
            "product_objective": preset.objective,
            "reference": "SASRec: absolute positions, post-LN nn.TransformerEncoderLayer x layers, 1 head, "
            "FFN width dim, ReLU, dropout 0.2, full CE at all B x L positions, tied item embedding, Adam lr 1e-3",
            "cache_dir": args.cache_dir,
            "argv": sys.argv if argv is None else list(argv),
        }
        payload["data"] = {
            **summary,
            "num_items": spec.num_items,
            "history_len": {k: dm.history_len for k, dm in dm_of.items()},
        }
        payload["contenders"] = results
        print(f"data: {summary['users']} users, {summary['items']} items, {summary['events']} events, "
              f"{summary['train_cases']} training cases, {summary['val_cases']} validation cases; "
              f"{steps_per_epoch} steps per epoch; contenders: {', '.join(c.name for c in contenders)}", flush=True)  # fmt: skip

        # -- memory probes (also the warm-up): two forward+backward passes, one eval batch -------
        probe_batches = {
            key: list(itertools.islice(iter(loader), 2)) for key, loader in loaders.items()
        }
        eval_probe = {key: next(iter(dm.val_dataloader())) for key, dm in used.items()}
        for c in contenders:
            with MemoryProbe(device) as train_probe:
                for batch in probe_batches[c.dm_key]:
                    c.probe_step(batch)
            c.eval_start()
            with MemoryProbe(device) as eval_probe_mem:
                c.eval_step(eval_probe[c.dm_key])
            c.eval_end()
            c.record["memory"] = {
                "kind": "cuda max_memory_allocated"
                if device.type == "cuda"
                else "process RSS (psutil), sampled every 1 ms",
                "persistent_mb": mb(c.persistent_bytes()),
                "train_step_extra_mb": mb(train_probe.extra),
                "train_step_peak_mb": mb(train_probe.peak),
                "eval_batch_extra_mb": mb(eval_probe_mem.extra),
                "eval_batch_peak_mb": mb(eval_probe_mem.peak),
            }
        del probe_batches, eval_probe

        # -- training and evaluation, alternating ------------------------------------------------
        for epoch in range(epochs):
            for loader in loaders.values():
                loader.sampler.set_epoch(epoch)
            for c in contenders:
                c.epoch_start()
            its = {key: iter(loader) for key, loader in loaders.items()}
            data_s = dict.fromkeys(its, 0.0)
            ep = {c.name: {"epoch": epoch + 1, "steps": 0, "positions": 0, "step_seconds": 0.0, "train_flops": 0.0,
                           "encoder_positions": 0, "padding_positions": 0, "positions_without_target": 0}
                  for c in contenders}  # fmt: skip
            for step in range(steps_per_epoch):
                got = {}
                for key, it in its.items():
                    t0 = time.perf_counter()
                    got[key] = next(it)
                    data_s[key] += time.perf_counter() - t0
                targets = [b["targets"] for b in got.values()]
                if any(not torch.equal(t, targets[0]) for t in targets[1:]):
                    raise RuntimeError(
                        f"epoch {epoch + 1}, step {step}: the data modules gave different cases"
                    )
                shift = step % len(contenders)
                for c in contenders[shift:] + contenders[:shift]:  # rotate who goes first
                    batch = got[c.dm_key]
                    targets = batch["targets"]
                    B, L = targets.shape
                    M = int((targets > 0).sum())
                    valid = int((batch["items"][:, -L:] > 0).sum())
                    if c.kind == "reference":  # it computes every batch at the full max_len
                        L = preset.max_len
                    e = ep[c.name]
                    e["step_seconds"] += c.train_step(batch)
                    e["steps"] += 1
                    e["positions"] += M
                    e["train_flops"] += c.flops.train_step(B, L, M)
                    e["encoder_positions"] += B * L
                    e["padding_positions"] += B * L - valid
                    e["positions_without_target"] += B * L - M
            # evaluation: every contender on the same validation batches, batch by batch
            for c in contenders:
                c.eval_start()
            eval_s = {c.name: 0.0 for c in contenders}
            eval_data_s = dict.fromkeys(used, 0.0)
            users = 0
            flops = {c.name: 0.0 for c in contenders}
            eval_its = {key: batches(dm.val_dataloader(), eval_batches) for key, dm in used.items()}
            for i in itertools.count():
                got = {}
                for key, it in eval_its.items():
                    t0 = time.perf_counter()
                    got[key] = next(it, None)
                    eval_data_s[key] += time.perf_counter() - t0
                if any(b is None for b in got.values()):
                    break
                users += len(next(iter(got.values()))["targets"])
                shift = i % len(contenders)
                for c in contenders[shift:] + contenders[:shift]:
                    B, L = got[c.dm_key]["targets"].shape
                    eval_s[c.name] += c.eval_step(got[c.dm_key])
                    flops[c.name] += c.flops.eval_batch(B, preset.max_len if c.kind == "reference" else L)
            for c in contenders:
                values, end_s = c.eval_end()
                e = ep[c.name]
                e["data_seconds"] = data_s[c.dm_key]
                e["epoch_seconds"] = e["step_seconds"] + data_s[c.dm_key]
                e["eval_seconds"] = eval_s[c.name] + end_s
                e["eval_data_seconds"] = eval_data_s[c.dm_key]
                e["eval_users"] = users
                e["eval_flops"] = flops[c.name]
                e[METRIC] = float(values.get(METRIC, float("nan")))
                e["val"] = {k: v for k, v in values.items() if "/" not in k}
                c.record["epochs"].append(e)
                c.record["summary"] = summarise(c, levels, machine["matmul_before"]["gflops_best"])
            add_ratios(results)
            positions = {c.name: ep[c.name]["positions"] for c in contenders}
            if len(set(positions.values())) > 1:
                raise RuntimeError(
                    f"epoch {epoch + 1}: contenders saw different supervised positions: {positions}"
                )
            line = ", ".join(
                f"{c.name} {ep[c.name]['epoch_seconds']:.1f}s ndcg@10={ep[c.name][METRIC]:.4f}"
                for c in contenders
            )
            print(f"epoch {epoch + 1}/{epochs}: {line}", flush=True)
            write_json(out_path, payload)

    # -- the machine again, the peak, final numbers ----------------------------------------------
    machine["matmul_after"] = matmul_gflops(device, mm_size, mm_reps)
    peak = max(machine["matmul_before"]["gflops_best"], machine["matmul_after"]["gflops_best"])
    machine["matmul_gflops"] = peak
    machine["rss_mb_at_end"] = mb(rss_bytes())
    if device.type == "cuda":
        machine["cuda_max_memory_allocated_mb"] = mb(torch.cuda.max_memory_allocated(device))
    for c in contenders:
        c.record["summary"] = summarise(c, levels, peak)
    add_ratios(results)
    # the product's batches (their common padding trimmed) and, with a reference, the full layout
    first = next((c for c in contenders if c.kind == "product"), None)
    full = next((c for c in contenders if c.kind == "reference"), None)
    payload["data"]["padding_share"] = first.record["summary"]["padding_share"] if first else None
    payload["data"]["no_target_share"] = (
        first.record["summary"]["no_target_share"] if first else None
    )
    payload["data"]["padding_share_untrimmed"] = (
        full.record["summary"]["padding_share"] if full else None
    )
    payload["complete"] = True
    write_json(out_path, payload)

    print(f"\nmatmul fp32 peak {peak:.1f} GFLOP/s ({mm_size}^2, best of {mm_reps}, before and after); "
          f"padding share of the product's B x L positions {fmt(payload['data']['padding_share'], '.3f')} "
          f"(untrimmed, as the reference computes them: {fmt(payload['data']['padding_share_untrimmed'], '.3f')}), "
          f"positions without a target {fmt(payload['data']['no_target_share'], '.3f')}")  # fmt: skip
    print(f"product objective: {preset.objective}; reference: full CE at all positions. Ratios: contender / reference "
          "(x ref > 1 means more throughput, or more seconds per epoch, or more memory).\n")  # fmt: skip
    print(markdown_table(payload))
    print(f"\nJSON: {out_path}")
    return payload


if __name__ == "__main__":
    main()
