"""Divergence: a run whose loss, gradients or weights stop being finite stops, keeping the
checkpoints written before (see docs/reliability.md)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn

from recsys_cli.errors import RecsysError


class Diverged(RecsysError):
    """Training produced a non-finite loss, gradients or weights; the run stops (status
    ``diverged`` in ``metrics.json``). ``where``: the step, epoch and loss, for the report."""

    def __init__(self, message: str, where: dict[str, Any] | None = None):
        super().__init__(message)
        self.where = where or {}


def nan_weights(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating tensors of ``state_dict`` that hold a NaN."""
    return [
        name for name, value in state_dict.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and bool(torch.isnan(value).any())
    ]  # fmt: skip


def _not_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether any of ``tensors`` holds a NaN or an infinity (one device sync for all of them)."""
    if not tensors:
        return False
    return not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


class DivergenceGuard(Callback):
    """Stops training at the first step whose loss or gradients are not finite, before the
    optimizer applies them, and before any evaluation or checkpoint of weights that are not
    finite: checkpoints written before keep the last finite weights.

    Checked: the loss of every training batch (``on_before_backward``; a non-finite loss stops a
    single process at once); the gradients before every optimizer step (after DDP's all-reduce,
    so every rank stops at the same step; skipped under a float16 grad scaler, which skips such
    steps itself); the weights before validation in training and at the end of every training
    epoch (a step with finite gradients may still overflow them). The step and epoch named are
    those of ``logs/metrics.csv`` (Lightning's ``global_step``, ``current_epoch``).
    """

    def __init__(self) -> None:
        self._bad_loss: float | None = None

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        self._bad_loss = float(loss.detach().float().sum())
        if trainer.world_size == 1:  # under DDP every rank stops together, at the gradient check
            self._stop(trainer, f"the training loss is {self._bad_loss}")

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # float16: the scaler skips steps with overflowing gradients by design
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if _not_finite(grads):  # identical on every rank (all-reduced), so every rank stops here
            loss = f"the training loss is {self._bad_loss}" if self._bad_loss is not None else "the loss is finite"
            self._stop(trainer, f"{loss} and the gradients are not finite")
        self._bad_loss = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._check_weights(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_weights(trainer, pl_module)

    def _check_weights(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if _not_finite([p.detach() for p in pl_module.parameters()]):
            self._stop(trainer, "the weights are no longer finite")

    def _stop(self, trainer: pl.Trainer, what: str) -> None:
        step, epoch = int(trainer.global_step), int(trainer.current_epoch)
        loss = None if self._bad_loss is None else str(self._bad_loss)  # "nan" / "inf": JSON has neither
        raise Diverged(f"training diverged at step {step} (epoch {epoch}): {what}", {"step": step, "epoch": epoch, "loss": loss, "what": what})
