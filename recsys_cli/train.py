"""``recsys train``: build everything from the config, train, test the best checkpoint, report.

This module knows no particular dataset, model or encoder: each is built from ``_target_``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recsys_cli import __version__
from recsys_cli.data.datamodule import SequenceDataModule
from recsys_cli.data.windows import history_len, parse_scales
from recsys_cli.errors import ConfigError, RecsysError
from recsys_cli.io import atomic_write, write_json_atomic, write_text_atomic
from recsys_cli.training.callbacks import AtomicCheckpointIO
from recsys_cli.training.module import RecommenderModule

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


def build_datamodule(cfg: DictConfig) -> SequenceDataModule:
    """The data module with the history length the configured scales need."""
    scales = parse_scales(cfg.scales.windows, cfg.scales.max_events)
    if cfg.data.max_len < 2:
        raise ConfigError(f"data.max_len={cfg.data.max_len}: the encoder needs at least 2 positions; use 2 or more")
    return instantiate(cfg.data, history_len=history_len(scales, cfg.data.max_len), _recursive_=True)


def check_against_data(cfg: DictConfig, dm: SequenceDataModule) -> None:
    """Config checks that need the prepared data (still before any training)."""
    data = dm.load()
    too_big = [k for k in cfg.metrics.ks if k > data.num_items]
    if too_big:
        raise ConfigError(
            f"metrics.ks: K={too_big[0]} is larger than the catalogue ({data.num_items} items); "
            f"use K <= {data.num_items}"
        )
    scales = parse_scales(cfg.scales.windows, cfg.scales.max_events)
    timed = [s.name for s in scales if s.seconds is not None]
    if timed and not data.has_time:
        raise ConfigError(
            f"scales: {timed} use durations but dataset '{dm.name}' has no timestamps; "
            "use count windows ({last: N}) or null, e.g. scales=last_5_20_all"
        )


def build_module(cfg: DictConfig, dm: SequenceDataModule, run_info: dict) -> RecommenderModule:
    data = dm.load()
    model = instantiate(cfg.model, num_items=data.num_items, num_event_types=data.num_event_types)
    return RecommenderModule(
        model=model,
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        ks=cfg.metrics.ks,
        num_items=data.num_items,
        filter_seen=cfg.metrics.filter_seen,
        run_info=run_info,
    )


def make_run_info(cfg: DictConfig, dm: SequenceDataModule) -> dict:
    """What a checkpoint carries so that ``recsys evaluate`` needs nothing else."""
    data = dm.load()
    return {
        "format": CHECKPOINT_FORMAT,
        "program": "recsys",
        "version": __version__,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "item_vocab": [str(v) for v in data.item_vocab],
        "num_items": data.num_items,
        "data_fingerprint": data.fingerprint,
    }


def save_vocab(run_dir: Path, dm: SequenceDataModule) -> None:
    data = dm.load()
    vocab_dir = run_dir / "vocab"

    def write(name: str, frame: polars.DataFrame) -> None:
        atomic_write(vocab_dir / f"{name}.parquet", lambda tmp: frame.write_parquet(tmp))

    items = {"index": np.arange(1, data.num_items + 1), "item_id": [str(v) for v in data.item_vocab]}
    if data.item_titles is not None:
        items["title"] = data.item_titles
    write("items", polars.DataFrame(items))
    write("users", polars.DataFrame({"index": np.arange(data.num_users), "user_id": [str(v) for v in data.user_vocab]}))


def format_table(results: dict[str, dict[str, float]]) -> str:
    """Metrics as a text table: one row per metric, one column per stage."""
    stages = [s for s in ("val", "test") if results.get(s)]
    names = list(dict.fromkeys(n for s in stages for n in results[s]))
    width = max([len(n) for n in names] + [6])
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{s:>8}" for s in stages)]
    for name in names:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{results[s].get(name, math.nan):8.4f}" for s in stages))
    return "\n".join(lines)


def build_trainer(cfg: DictConfig, run_dir: Path, with_callbacks: bool = True) -> pl.Trainer:
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] if with_callbacks else []
    loggers = [instantiate(c) for c in cfg.logger.values()] if cfg.get("logger") else []
    return instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and test one configuration; writes the run directory; returns the report."""
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")

    dm = build_datamodule(cfg)
    dm.load()
    check_against_data(cfg, dm)
    summary = dm.summary()
    log.info("Data: %s", summary)
    run_info = make_run_info(cfg, dm)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    save_vocab(run_dir, dm)

    module = build_module(cfg, dm, run_info)
    trainer = build_trainer(cfg, run_dir)
    started = time.perf_counter()
    epochs = 0
    if module.model.requires_training:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)
        epochs = trainer.current_epoch
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        best = best if best and Path(best).exists() else None
        trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)
        trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)
    else:
        mask = dm.train_events_mask()
        module.model.fit(dm.data.items[mask], dm.data.user_of_event[mask])
        trainer.validate(module, datamodule=dm, verbose=False)
        trainer.test(module, datamodule=dm, verbose=False)
        best = str(run_dir / "checkpoints" / "best.ckpt")
        trainer.save_checkpoint(best)
    train_seconds = time.perf_counter() - started

    report = {
        "status": "ok",
        "val": module.results.get("val", {}),
        "test": module.results.get("test", {}),
        "best_checkpoint": best,
        "epochs": epochs,
        "train_seconds": round(train_seconds, 3),
        "seconds_per_epoch": round(train_seconds / epochs, 3) if epochs else None,
        "data": summary,
        "scale_weights": module.scale_weight_history,
        "version": __version__,
    }
    if trainer.is_global_zero:
        write_json_atomic(run_dir / "metrics.json", report)
        if module.scale_weight_history:
            write_json_atomic(run_dir / "scale_weights.json", module.scale_weight_history)
        print(f"\nRun directory: {run_dir}\n{format_table({'val': report['val'], 'test': report['test']})}")
        if module.scale_weight_history:
            last = {k: round(v, 3) for k, v in module.scale_weight_history[-1].items() if k != "epoch"}
            print(f"Scale weights (last epoch): {last}")
    return report


def objective(report: dict[str, Any], metric: str) -> float:
    stage, _, name = metric.partition("/")
    value = report.get(stage, {}).get(name)
    if value is None:
        raise RecsysError(f"optimized_metric={metric!r} was not computed; use e.g. val/ndcg@10")
    return float(value)

