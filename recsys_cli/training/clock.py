"""Training time per epoch in the run's log, for time to quality.

``time/train_s`` in ``logs/metrics.csv``: the seconds spent in training epochs up to the end of
each epoch, validation and checkpoint writing left out (the clock stops when the epoch's
validation starts), summed over the run, a resumed run included (the sum travels in the
checkpoint). Read next to ``val/ndcg@10`` of the same row it says how long the model trained to
reach that quality; RePlay's runner (``scripts/peers/replay_sasrec.py``) measures the same.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class TrainClock(Callback):
    """Logs ``time/train_s``, the run's training seconds so far, at the end of every epoch."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started: float | None = None

    def _stop(self) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.training:  # validation inside a training epoch is not training time
            self._stop()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()
        pl_module.log("time/train_s", self.seconds, on_epoch=True, sync_dist=False)

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seconds = float(state_dict.get("seconds", 0.0))
