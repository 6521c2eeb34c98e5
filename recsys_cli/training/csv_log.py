"""The run's CSV log, ``logs/metrics.csv``, kept whole when a run is resumed in its own folder.

Lightning's CSV logger deletes an existing ``metrics.csv`` as soon as it opens a folder that is
not empty, so ``recsys train ... ckpt_path=<run>/checkpoints/last.ckpt hydra.run.dir=<run>`` (a
resume into the run's own folder, which ``overwrite`` allows) lost every epoch logged before the
interruption: the learning curve, ``time/train_s`` and the validation history that
``scripts/convergence_table.py`` and ``recsys report`` read. This logger keeps them. At its first
save it drops the earlier rows of the epochs being logged again (a run killed mid-epoch repeats
that epoch from the checkpoint at the end of the one before) and writes the kept rows and the new
ones as one file, atomically; after that it appends as Lightning's does. A fresh run in a
replaced folder (``overwrite=true``) logs from epoch 0, so nothing earlier is kept.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from recsys_cli.io import atomic_write


def _epoch(row: dict[str, Any]) -> float | None:
    try:
        return float(row["epoch"])
    except (KeyError, TypeError, ValueError):
        return None


class _ResumingWriter(ExperimentWriter):
    """Lightning's writer, but the rows already in ``metrics.csv`` are read, not deleted."""

    def _check_log_dir_exists(self) -> None:  # called by __init__ instead of deleting the file
        self._earlier: list[dict[str, str]] | None = None
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="") as handle:
                self._earlier = list(csv.DictReader(handle))

    def save(self) -> None:
        if self._earlier is None or not self.metrics:
            super().save()
            return
        earlier, self._earlier = self._earlier, None  # merged once, at the first save with rows
        first = min((e for e in map(_epoch, self.metrics) if e is not None), default=0.0)
        kept = [row for row in earlier if (e := _epoch(row)) is not None and e < first]
        self._record_new_keys()
        self.metrics_keys = sorted(set(self.metrics_keys).union(*(row.keys() for row in kept)))
        rows, keys = kept + self.metrics, self.metrics_keys

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(self.metrics_file_path, write)
        self.metrics = []


class CSVLogger(LightningCSVLogger):
    """Lightning's CSV logger (same arguments, same file) that keeps a resumed run's earlier rows."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingWriter(log_dir=self.log_dir)
        return self._experiment
