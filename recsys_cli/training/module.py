"""One LightningModule for every model: dense training on the objective, full-ranking evaluation."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from recsys_cli.contract.batch import Batch, eval_targets
from recsys_cli.contract.output import ModelOutput
from recsys_cli.training.metrics import RankingMetrics, gather_cases, sync_distributed
from recsys_cli.training.objective import Objective, TermEvaluation

# scores ranked at a time in evaluation (2^25 float32 = 128 MiB; the ranking makes a few masks
# of the same size): a batch of a 3,500-item catalogue is one chunk, one of a million items goes
# 33 rows at a time
EVAL_SCORE_ELEMENTS = 2**25

# Evaluation metrics are all-reduced by sync_distributed before they are logged (every rank logs
# the global value), so Lightning's advice to log them with sync_dist=True does not apply.
warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")


@dataclass
class TrainingStep:
    """One training batch: the summed objective, each term's value, the number of supervised
    positions and the model output."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    num_targets: int
    output: ModelOutput


class RecommenderModule(pl.LightningModule):
    """Trains ``model`` on ``objective`` at every supervised position; evaluates by full ranking.

    ``model(batch, keep=None)`` returns a :class:`ModelOutput` (user states and the item table, or
    direct scores for count baselines); ``model.scale_names`` names its scales (empty without).
    Trained models (``requires_training``) also give ``parameter_groups()`` for the optimizer and
    ``refresh_items()``, called before every training epoch and evaluation.
    ``run_info`` (resolved config, vocabularies, code version) is stored in every checkpoint so
    ``recsys evaluate`` needs nothing else. With ``item_train_counts`` ([N + 1], the items' training
    events) every evaluation also reports the metrics per bucket of the target's count
    (``val/cold/ndcg@10``, ``test/head/cases``...; see :mod:`recsys_cli.training.buckets`).
    ``evaluations`` (what the objective's terms register, e.g. the next-behaviour head's accuracy
    next to its baselines, ``val/behaviour/accuracy``) add their metrics to every evaluation.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective | None,
        optimizer: Callable | None,
        ks: Sequence[int],
        num_items: int,
        filter_seen: bool = True,
        run_info: dict | None = None,
        item_train_counts: np.ndarray | None = None,
        evaluations: Sequence[TermEvaluation] = (),
    ):
        super().__init__()
        self.model, self.objective, self.optimizer_factory = model, objective, optimizer
        self.ks, self.num_items, self.filter_seen = list(ks), num_items, filter_seen
        self.run_info = run_info or {}
        self.metrics = RankingMetrics(self.ks, num_items, item_train_counts=item_train_counts)
        self.evaluations = list(evaluations)
        self.results: dict[str, dict[str, float]] = {}
        # the last test's cases (user, item, rank arrays; gather_cases), with every scale kept
        self.test_cases: dict[str, np.ndarray] | None = None
        self.scale_weight_history: list[dict[str, float]] = []
        self._keep: torch.Tensor | None = None  # scale ablation mask, set by ``without_scales``
        self._weight_sum: torch.Tensor | None = None
        self._weight_steps = 0

    # -- training ------------------------------------------------------------------------------
    def training_loss(self, batch: Batch) -> TrainingStep:
        """The objective of a batch over every supervised position (``targets > 0``)."""
        output = self.model(batch)
        loss, terms = self.objective(output, batch)
        return TrainingStep(loss, terms, int((batch["targets"] > 0).sum()), output)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        self.objective.set_step(self.global_step)
        step = self.training_loss(batch)
        n = step.num_targets
        self.log("train/loss", step.loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        for name, value in step.terms.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=n)
        weights = step.output.scale_weights
        if weights is not None:
            self._weight_sum = weights if self._weight_sum is None else self._weight_sum + weights
            self._weight_steps += 1
        return step.loss

    def on_train_epoch_end(self) -> None:
        if self._weight_sum is None:
            return
        mean = (self._weight_sum / self._weight_steps).tolist()
        named = dict(zip(self.model.scale_names, mean, strict=True))
        self.scale_weight_history.append({"epoch": self.current_epoch, **named})
        for name, value in named.items():
            self.log(f"scale_weight/{name}", value)
        self._weight_sum, self._weight_steps = None, 0

    def configure_optimizers(self):
        # trained models name their parameter groups (e.g. a language model with its own learning rate)
        return self.optimizer_factory(self.model.parameter_groups())

    def _refresh_items(self) -> None:
        """An item table that depends on trained weights is brought up to date (trained models)."""
        if self.model.requires_training:
            self.model.refresh_items()

    def on_train_epoch_start(self) -> None:
        self._refresh_items()

    # -- evaluation ----------------------------------------------------------------------------
    @contextmanager
    def without_scales(self, keep: torch.Tensor) -> Iterator[None]:
        """Evaluate with the scales where ``keep`` [S] is False removed (ablation), inside the block."""
        self._keep = keep
        try:
            yield
        finally:
            self._keep = None

    def ablation_masks(self) -> list[tuple[str, torch.Tensor]]:
        """(name, keep mask) for every scale of the model removed in turn (empty without scales)."""
        names = list(self.model.scale_names)
        return [(name, torch.arange(len(names)) != s) for s, name in enumerate(names)]

    def _eval_step(self, batch: Batch) -> None:
        keep = None if self._keep is None else self._keep.to(self.device)
        output = self.model(batch, keep, last_only=True)  # ranking reads the newest state only
        targets, seen = eval_targets(batch), batch["seen"] if self.filter_seen else None
        # rows at a time: a million-item catalogue is ranked without a [B, N] matrix per batch
        for rows, scores in output.last_score_chunks(EVAL_SCORE_ELEMENTS):
            seen_rows = None if seen is None else seen[rows]
            self.metrics.update(scores, targets[rows], seen_rows, overwrite=True, cases=batch["case"][rows])
        for evaluation in self.evaluations:
            evaluation.update(output, batch)

    def _eval_end(self, stage: str) -> None:
        sync_distributed(self.metrics)
        if self.metrics.keep_cases:
            self.test_cases = gather_cases(self.metrics)  # a collective under DDP
        values = self.metrics.compute() if self.metrics.count else {}
        for evaluation in self.evaluations:
            evaluation.sync()  # every rank: a collective under DDP
            values.update(evaluation.compute())
            evaluation.reset()
        self.results[stage] = values
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, sync_dist=False)
        self.metrics.reset()

    def _eval_start(self) -> None:
        self.metrics.reset()
        for evaluation in self.evaluations:
            evaluation.reset()
        self._refresh_items()

    def on_validation_epoch_start(self) -> None:
        self._eval_start()
        self.metrics.keep_cases = False

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_start()
        self.metrics.keep_cases = self._keep is None  # per-case results of the whole model only

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    # -- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["recsys"] = self.run_info
        checkpoint["scale_weight_history"] = self.scale_weight_history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # a resumed run continues the interrupted run's history; loading the best checkpoint for
        # the final validation and test keeps the history of every epoch trained
        if not self.scale_weight_history:
            self.scale_weight_history = list(checkpoint.get("scale_weight_history", []))
