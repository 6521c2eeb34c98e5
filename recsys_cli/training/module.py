"""One LightningModule for every model: dense next-item training, full-ranking evaluation."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from recsys_cli.training.metrics import RankingMetrics, sync_distributed

# Evaluation metrics are all-reduced by sync_distributed before they are logged (every rank logs
# the global value), so Lightning's advice to log them with sync_dist=True does not apply.
warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")


class RecommenderModule(pl.LightningModule):
    """Trains ``model`` with ``loss`` on every supervised position; evaluates by full ranking.

    ``model`` implements ``forward(batch) -> [B, L, D]`` user states, ``output_embeddings() ->
    [N + 1, D]`` and ``score(batch, keep) -> [B, N + 1]``; count baselines implement ``score`` only.
    ``run_info`` (resolved config, vocabularies, code version) is stored in every checkpoint so
    ``recsys evaluate`` needs nothing else.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Callable | None,
        optimizer: Callable | None,
        ks: Sequence[int],
        num_items: int,
        filter_seen: bool = True,
        run_info: dict | None = None,
    ):
        super().__init__()
        self.model, self.loss, self.optimizer_factory = model, loss, optimizer
        self.ks, self.num_items, self.filter_seen = list(ks), num_items, filter_seen
        self.run_info = run_info or {}
        self.metrics = RankingMetrics(self.ks, num_items)
        self.keep: torch.Tensor | None = None  # scale ablation mask used at evaluation
        self.results: dict[str, dict[str, float]] = {}
        self.scale_weight_history: list[dict[str, float]] = []
        self._weight_sum: torch.Tensor | None = None
        self._weight_steps = 0

    # -- training ------------------------------------------------------------------------------
    def batch_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """The training loss of a batch over every non-padding target, and the number of targets."""
        z = self.model(batch)  # [B, L, D]
        targets = batch["targets"]  # [B, L]
        sel = targets > 0
        return self.loss(z[sel], targets[sel], self.model.output_embeddings()), int(sel.sum())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, n_targets = self.batch_loss(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n_targets)
        weights = getattr(self.model, "scale_weights", None)
        if weights is not None and weights.numel():
            self._weight_sum = weights if self._weight_sum is None else self._weight_sum + weights
            self._weight_steps += 1
        return loss

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
        return self.optimizer_factory(self.parameters())

    # -- evaluation ----------------------------------------------------------------------------
    def _eval_step(self, batch: dict[str, torch.Tensor]) -> None:
        keep = None if self.keep is None else self.keep.to(self.device)
        scores = self.model.score(batch, keep)  # [B, N + 1]
        self.metrics.update(scores, batch["target"], batch["seen"] if self.filter_seen else None)

    def _eval_end(self, stage: str) -> None:
        sync_distributed(self.metrics)
        values = self.metrics.compute() if self.metrics.count else {}
        self.results[stage] = values
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, sync_dist=False)
        self.metrics.reset()

    def on_validation_epoch_start(self) -> None:
        self.metrics.reset()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self.metrics.reset()

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
