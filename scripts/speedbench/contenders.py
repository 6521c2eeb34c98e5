"""The contenders: the reference and the product's models, each training on the same batches
with its own random stream, and what they need (overrides, FLOP models, memory checks).

A contender is named ``reference`` or ``ENCODER[+SWITCH...]`` (:func:`parse_contender`): an
encoder of :data:`ENCODERS` and switches of :data:`SWITCHES` (the time-window scales, time inside
attention), e.g. ``transformer+hstu`` or ``bert``; a new switch is one entry of :data:`SWITCHES`.
The reference is built by :func:`build_reference`, every product model by :func:`build_product`.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from recsys_cli.builders import build_module, resolve_filter_seen
from recsys_cli.compose import compose_train
from recsys_cli.contract.batch import eval_targets
from recsys_cli.training.metrics import RankingMetrics

from .flops import FlopModel
from .machine import available_memory, sync
from .presets import Preset
from .reference import ReferenceSASRec

REPO = Path(__file__).resolve().parents[2]
ENCODERS = ("transformer", "gru", "lstm", "bert")  # bert: BERT4Rec, trained by the cloze task
SCALES_ON = "session_day_month_all"
# the default set: the reference and the three next-item encoders with and without the scales
ALL_CONTENDERS = ("reference", *ENCODERS[:3], *(f"{e}+scales" for e in ENCODERS[:3]))
# what a contender's name may add after its encoder, as overrides (docs/model.md, "Time inside
# attention"); all but the scales are attention switches (transformer, bert)
SWITCHES: dict[str, tuple[str, ...]] = {
    "scales": (f"scales={SCALES_ON}",),
    "hstu": ("model.encoder.time_bias=hstu",),
    "tisasrec": ("model.encoder.time_bias=tisasrec",),
    "heads4": ("model.encoder.num_heads=4",),
    "windows": ("model.encoder.num_heads=4", "model.encoder.head_windows=[30m,1d,30d,null]"),
}
METRIC = "ndcg@10"


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
    task: str = "next_item"  # contenders of one task train on the same cases
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


@dataclass(frozen=True)
class ContenderSpec:
    """What a contender's name says: its encoder, scales, task and further overrides."""

    encoder: str  # reference | transformer | gru | lstm | bert
    scales: str = "none"
    task: str = "next_item"  # next_item | cloze (bert)
    switches: tuple[str, ...] = ()  # overrides of the attention switches

    @property
    def dm_key(self) -> str:
        """The data module whose batches it reads: one per scales setting and task."""
        return self.scales if self.task == "next_item" else f"{self.scales}/{self.task}"


BASE = ContenderSpec("transformer")  # the plain next-item data module every run builds


def parse_contender(name: str) -> ContenderSpec:
    """``transformer+scales`` -> transformer on ``session_day_month_all``; ``bert+hstu`` -> the
    cloze-trained bidirectional encoder with the HSTU time bias."""
    if name == "reference":
        return ContenderSpec("reference")
    encoder, *switches = name.split("+")
    unknown = [s for s in switches if s not in SWITCHES]
    if encoder not in ENCODERS or unknown or len(set(switches)) != len(switches):
        raise SystemExit(
            f"unknown contender {name!r}: give reference, or an encoder of {', '.join(ENCODERS)} followed "
            f"by distinct +switches of {', '.join(SWITCHES)} (e.g. transformer+hstu)"
        )
    attention = [s for s in switches if s != "scales"]
    if attention and encoder not in ("transformer", "bert"):
        raise SystemExit(f"contender {name!r}: {', '.join(attention)} switch attention: transformer or bert only")
    if {"hstu", "tisasrec"} <= set(switches):
        raise SystemExit(f"contender {name!r}: one time bias at a time (hstu or tisasrec)")
    overrides = tuple(dict.fromkeys(o for s in attention for o in SWITCHES[s]))  # in order, once
    return ContenderSpec(
        encoder, SCALES_ON if "scales" in switches else "none", "cloze" if encoder == "bert" else "next_item", overrides
    )


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
        f"model.dropout={preset.dropout}",
        "optimizer.lr=0.001",
    ]
    if preset.data_path is not None:
        path = Path(args.data_path or REPO / preset.data_path).resolve()
        if not path.is_dir():
            raise SystemExit(f"--preset {args.preset}: no dataset folder {path}; give --data-path")
        over.append(f"data.path={path}")
    over += [f"data.reader.{k}={v}" for k, v in preset.reader.items()]
    over += [f"data.preparation.{k}={v}" for k, v in preset.preparation.items()]
    if preset.filter_seen is not None:
        over.append(f"metrics.filter_seen={str(preset.filter_seen).lower()}")
    return over


def product_overrides(preset: Preset, args: argparse.Namespace, run_dir: Path, spec: ContenderSpec) -> list[str]:
    over = [
        *common_overrides(preset, args, run_dir),
        f"model/encoder={spec.encoder}",
        f"scales={spec.scales}",
        f"task={spec.task}",
        f"objective/next_item={preset.objective}",
        f"model.encoder.num_layers={preset.layers}",
    ]
    if spec.encoder == "transformer":  # SASRec's sizes
        over += ["model.encoder.num_heads=1", "model.encoder.ffn_mult=1"]
    elif spec.encoder == "bert":  # BERT4Rec's (conf/experiment/ml1m_bert4rec.yaml)
        over += ["model.encoder.num_heads=2", "model.encoder.ffn_mult=4"]
    return over + list(spec.switches) + list(args.override)


def compose(overrides: list[str]) -> DictConfig:
    cfg = compose_train(overrides)
    OmegaConf.resolve(cfg)
    return cfg


def product_flops(cfg: DictConfig, spec: Any, encoder: str) -> FlopModel:
    """The analytic count (the time biases' few per-logit additions are left out)."""
    enc = cfg.model.encoder
    objective = str(cfg.objective.next_item._target_).rsplit(".", 1)[-1]
    output = {"FullSoftmaxCE": "full_ce", "SampledSoftmax": "sampled_softmax"}.get(
        objective, "full_ce"
    )
    scale_set = spec.scales
    return FlopModel(
        encoder="transformer" if encoder == "bert" else encoder,
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


def build_reference(preset: Preset, args: argparse.Namespace, dm: Any, cfg: DictConfig, device: torch.device) -> Contender:
    """The reference SASRec at the preset's sizes, with its own metrics (the product's class)."""
    spec = dm.spec()
    torch.manual_seed(args.seed)
    model = ReferenceSASRec(
        spec.num_items, preset.max_len, preset.dim, preset.layers, 1, preset.dropout, init=args.reference_init
    ).to(device)
    return Contender(
        "reference", "reference", "none", model, torch.optim.Adam(model.parameters(), lr=1e-3),
        FlopModel("transformer", preset.dim, preset.layers, preset.dim, spec.num_items, "all_positions"),
        device, args.seed,
        metrics=RankingMetrics(cfg.metrics.ks, spec.num_items, item_train_counts=spec.item_train_counts),
        filter_seen=resolve_filter_seen(cfg.metrics.filter_seen, dm.load()),
    )  # fmt: skip


def build_product(
    name: str, spec: ContenderSpec, preset: Preset, args: argparse.Namespace, dm: Any, run_dir: Path,
    device: torch.device,
) -> Contender:
    """A product model built from ``conf/`` as ``recsys train`` builds it, on ``dm``'s data."""
    overrides = product_overrides(preset, args, run_dir, spec)
    cfg = compose(overrides)
    torch.manual_seed(args.seed)
    module = build_module(cfg, dm, {})
    module.log = lambda *a, **k: None  # _eval_end logs; there is no Trainer here
    module.to(device)
    return Contender(
        name, "product", spec.dm_key, module, module.configure_optimizers(),
        product_flops(cfg, dm.spec(), spec.encoder), device, args.seed, task=spec.task,
        overrides=[o for o in overrides if not o.startswith("paths.")], filter_seen=module.filter_seen,
    )  # fmt: skip
