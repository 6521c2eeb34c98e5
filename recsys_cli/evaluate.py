"""``recsys evaluate ckpt=PATH``: rebuild a run from its checkpoint alone and evaluate it.

The checkpoint carries the run's resolved config and item vocabulary; the data module is rebuilt
from that config (prepared data comes from the cache or is prepared again, deterministically), the
vocabulary is checked against the stored one, and the weights are loaded with
``torch.load(weights_only=True)``. Overrides of the run's config are allowed and printed.
Evaluation runs in one process, on the run's accelerator when this machine has it, else the CPU.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from recsys_cli.builders import (
    apply_threads,
    build,
    build_datamodule,
    build_module,
    trainer_settings,
)
from recsys_cli.checkpoints import load_run_checkpoint
from recsys_cli.compose import compose_train, config_groups
from recsys_cli.errors import ConfigError
from recsys_cli.io import write_json_atomic
from recsys_cli.reporting import format_table, held_out_line, model_notes, write_test_cases
from recsys_cli.run_folders import run_folder_of

log = logging.getLogger(__name__)

def reports_folder(ckpt_path: str, output_dir: str | None) -> Path:
    """Where a report of ``ckpt_path`` goes: ``output_dir`` when given, else ``evaluations/`` in the
    checkpoint's run folder (:func:`~recsys_cli.run_folders.run_folder_of`), else ``evaluations/``
    next to a checkpoint that is in no run folder."""
    if output_dir is not None:
        return Path(output_dir)
    run = run_folder_of(ckpt_path)
    return (run if run is not None else Path(ckpt_path).resolve().parent) / "evaluations"


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """Apply ``key=value`` (dotted key) and ``group=option`` (config group) overrides to a stored
    run config. Group options are read from ``conf/``; everything else stays as the run had it."""
    applied = []
    groups = set(config_groups())
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.lstrip("+")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: write key=value (e.g. data.path=/data/ml-1m)")
        if key in groups:  # a config group (data, trainer, data/split...): compose it from conf/, graft it in
            fresh = compose_train([item])
            dotted = key.replace("/", ".")
            OmegaConf.update(cfg, dotted, OmegaConf.select(fresh, dotted), merge=False)
        else:
            if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
                raise ConfigError(f"override {item!r}: the run's config has no key '{key}'")
            OmegaConf.update(cfg, key, yaml.safe_load(value) if value else None, merge=True)
        applied.append(item)
    return applied


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
    ckpt = load_run_checkpoint(ckpt_path)  # a checkpoint of an older format is upgraded
    info = ckpt["recsys"]
    cfg = OmegaConf.create(info["config"])
    applied = apply_overrides(cfg, overrides)
    reports = reports_folder(ckpt_path, output_dir)
    print(f"Overrides of the run's config: {' '.join(applied)}" if applied else "Overrides of the run's config: none")
    apply_threads(cfg)

    dm = build_datamodule(cfg)
    data = dm.load()
    stored = info["item_vocab"]
    if [str(v) for v in data.item_vocab] != stored:
        raise ConfigError(
            f"the data now has {data.num_items} items but the checkpoint was trained on {len(stored)} "
            "with a different item vocabulary; evaluate on the same dataset (check data.path and "
            "data.preparation)"
        )
    if data.fingerprint != info.get("data_fingerprint"):
        print(
            f"Warning: The prepared data differs from the data the run was trained on (fingerprint "
            f"{data.fingerprint}, trained on {info.get('data_fingerprint')}): the input files, the preparation "
            "settings or the code changed; metrics may differ from training's",
            file=sys.stderr,
        )
    module = build_module(cfg, dm, info)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise ConfigError(
            f"ckpt={ckpt_path}: the weights do not fit the model built from the config "
            f"({str(err).splitlines()[0][:160]}); do not override model.* or scales.* when evaluating"
        ) from None
    trainer = build(
        trainer_settings(cfg),
        "trainer",
        callbacks=[],
        logger=False,
        enable_checkpointing=False,
        default_root_dir=str(reports),
        **evaluate_device(cfg),
    )
    run = trainer.validate if stage == "val" else trainer.test

    results: dict[str, dict[str, float]] = {}
    run(module, datamodule=dm, verbose=False)
    results["all scales"] = module.results[stage]
    if ablate_scales:
        masks = module.ablation_masks()
        if not masks:
            raise ConfigError("ablate_scales=true: this model has no time-window scales to remove")
        for name, keep in masks:
            with module.without_scales(keep):
                run(module, datamodule=dm, verbose=False)
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
