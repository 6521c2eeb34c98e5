"""``recsys evaluate ckpt=PATH``: rebuild a run from its checkpoint alone and evaluate it.

The run is rebuilt by :func:`recsys_cli.runs.load_run` (config, data, vocabulary check, weights
read with ``torch.load(weights_only=True)``); overrides of the run's config are allowed and printed.
Evaluation runs in one process, on the run's accelerator when this machine has it, else the CPU.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from recsys_cli.builders import build, trainer_settings
from recsys_cli.errors import ConfigError
from recsys_cli.io import write_json_atomic
from recsys_cli.reporting import format_table, held_out_line, model_notes, write_test_cases
from recsys_cli.run_folders import run_folder_of
from recsys_cli.runs import load_run

log = logging.getLogger(__name__)


def reports_folder(ckpt_path: str, output_dir: str | None) -> Path:
    """Where a report of ``ckpt_path`` goes: ``output_dir`` when given, else ``evaluations/`` in the
    checkpoint's run folder (:func:`~recsys_cli.run_folders.run_folder_of`), else ``evaluations/``
    next to a checkpoint that is in no run folder."""
    if output_dir is not None:
        return Path(output_dir)
    run = run_folder_of(ckpt_path)
    return (run if run is not None else Path(ckpt_path).resolve().parent) / "evaluations"


def evaluate_device(cfg: DictConfig) -> dict[str, Any]:
    """Trainer settings for evaluation: one process (metrics under DDP equal the single-process
    ones, so nothing is lost), and the CPU when the run used a GPU this machine does not have."""
    settings: dict[str, Any] = {"devices": 1, "strategy": "auto"}
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        print(f"Note: the run used trainer.accelerator={cfg.trainer.accelerator}; this machine has no GPU, evaluating on the CPU in 32-bit")
        settings.update(accelerator="cpu", precision="32-true")
    return settings


def evaluate(
    ckpt_path: str, overrides: list[str], stage: str = "test", ablate_scales: bool = False, output_dir: str | None = None
) -> dict[str, Any]:
    """Evaluate the checkpoint on ``stage`` of its run's split (or of the overridden config);
    prints a table and writes ``<time>-<stage>.json`` to :func:`reports_folder` (by default
    ``<run>/evaluations/``); returns the report."""
    reports = reports_folder(ckpt_path, output_dir)
    run = load_run(ckpt_path, overrides)
    cfg, dm, data, module, info, applied = run.cfg, run.dm, run.data, run.module, run.info, run.overrides
    trainer = build(
        trainer_settings(cfg),
        "trainer",
        callbacks=[],
        logger=False,
        enable_checkpointing=False,
        default_root_dir=str(reports),
        **evaluate_device(cfg),
    )
    evaluate_stage = trainer.validate if stage == "val" else trainer.test

    results: dict[str, dict[str, float]] = {}
    evaluate_stage(module, datamodule=dm, verbose=False)
    results["all scales"] = module.results[stage]
    if ablate_scales:
        masks = module.ablation_masks()
        if not masks:
            raise ConfigError("ablate_scales=true: this model has no time-window scales to remove")
        for name, keep in masks:
            with module.without_scales(keep):
                evaluate_stage(module, datamodule=dm, verbose=False)
            results[f"without {name}"] = module.results[stage]

    seen = "filtered" if module.filter_seen else "kept"
    print(f"\nCheckpoint: {ckpt_path}\nSplit: {dm.split.description}, stage: {stage}, seen items {seen}")
    summary = dm.summary()
    held = summary.get("cold_items")
    if held:
        print(held_out_line(held))
    notes = model_notes(cfg.model, summary)
    for note in notes:
        print(note)
    print(format_table(results, width=12))
    report = {
        "checkpoint": str(ckpt_path),
        "stage": stage,
        "overrides": applied,
        "results": results,
        "filter_seen": module.filter_seen,
        "notes": notes,
        **({"cold_items": held} if held else {}),
        "data_fingerprint_now": data.fingerprint,
        "data_fingerprint_trained": info.get("data_fingerprint"),
    }
    path = reports / f"{report_stamp(time.time_ns())}-{stage}.json"
    write_json_atomic(path, report)
    print(f"Report: {path}")
    write_test_cases(path.with_name(path.name.removesuffix(".json") + "_cases.parquet"), module, dm)
    return report


def report_stamp(ns: int) -> str:
    """Local time of ``ns`` (nanoseconds since the epoch) to the nanosecond, from one clock reading,
    so that reports' names sort in the order they were written (read twice, a second boundary
    between the readings could put a later report first)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(seconds)) + f".{fraction:09d}"
