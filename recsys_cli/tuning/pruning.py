"""Pruning of ``recsys tune``'s trials by their validation metric, epoch by epoch.

:class:`TrialPruning` is a Lightning callback that the tuner adds to each trial's run
(``callbacks.tune_pruning``). After every validation it reports the monitored metric to the
trial being trained in this process (:func:`active_trial`) and asks the study's pruner; a trial to
prune stops training there, like early stopping: its run still tests its best checkpoint and
writes its folder, and the tuner records it as pruned. Outside ``recsys tune`` (no active
trial) it does nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn

# the trial this process trains now, and the epoch at which it was pruned (None: not pruned)
_active: dict[str, Any] = {"trial": None, "pruned_at": None}


@contextmanager
def active_trial(trial: Any) -> Iterator[dict[str, Any]]:
    """Make ``trial`` the one :class:`TrialPruning` reports to inside the block; yields the state
    whose ``pruned_at`` says at which epoch it was pruned (None if it was not)."""
    _active.update(trial=trial, pruned_at=None)
    try:
        yield _active
    finally:
        _active["trial"] = None


class TrialPruning(Callback):
    """Reports ``monitor`` after every validation to the active trial; stops a trial its pruner
    prunes. ``monitor``: the metric the study optimises (``optimized_metric``)."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trial = _active["trial"]
        if trial is None or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return  # the final validation of the best checkpoint is not an epoch
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        epoch = int(trainer.current_epoch)
        trial.report(value if math.isfinite(value) else float("-inf"), step=epoch)
        if trial.should_prune():
            _active["pruned_at"] = epoch
            trainer.should_stop = True
