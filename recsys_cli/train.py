"""``recsys train``: build everything from the config, train, test the best checkpoint, report.

This module tells the story of a run; the parts live in :mod:`recsys_cli.checks` (config checks
before and after preparation, resume checks), :mod:`recsys_cli.builders` (data module, model,
objective, module, trainer, each from its ``_target_``), :mod:`recsys_cli.checkpoints` (what a
checkpoint carries) and :mod:`recsys_cli.reporting` (vocabularies, metrics table, ``metrics.json``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from recsys_cli import __version__
from recsys_cli.analysis.cases import CASES_FILE
from recsys_cli.builders import (
    apply_threads,
    best_checkpoint,
    build_datamodule,
    build_module,
    build_trainer,
    close_loggers,
)
from recsys_cli.checkpoints import initialise_from, make_run_info
from recsys_cli.checks import check_against_data, check_resume, validate_config
from recsys_cli.io import write_json_atomic, write_text_atomic
from recsys_cli.reporting import (
    model_notes,
    objective,
    save_vocab,
    write_run_report,
    write_test_cases,
)
from recsys_cli.run_folders import claim_run_folder, launched_rank, release_claim
from recsys_cli.training.divergence import Diverged

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and test one configuration; writes the run directory; returns the report.

    The run directory gets ``config.yaml`` (resolved), ``vocab/``, ``checkpoints/best.ckpt`` and
    ``last.ckpt``, ``metrics.json`` and the loggers' files. The first process of a run claims the
    folder (refused if it holds another run, see :mod:`recsys_cli.run_folders`); the other ranks
    of a DDP run join it. A run that diverges writes ``metrics.json`` with status ``diverged``
    and raises :class:`Diverged` (one line: where, and what to try).
    """
    scales = validate_config(cfg)  # the scale config, parsed once
    apply_threads(cfg)
    first_epoch = check_resume(cfg) if cfg.ckpt_path is not None else 0
    run_dir = Path(cfg.paths.run_dir)
    first_process = launched_rank() == 0
    if first_process:
        claim_run_folder(run_dir, cfg.overwrite, cfg.ckpt_path)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)

    try:
        dm = build_datamodule(cfg, scales)
        data = dm.load()
        longest = int((dm.train_end - dm.train_data.offsets[:-1]).max(initial=1)) - 1  # targets of a user
        check_against_data(cfg, dm.spec(), dm.name, longest)
    except BaseException:
        if first_process:
            release_claim(run_dir)  # nothing of this run was written: the folder is free again
        raise
    summary = dm.summary()
    log.info("Data: %s", summary)
    run_info = make_run_info(cfg, data.item_vocab, data.fingerprint)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    save_vocab(run_dir, data)

    # the model's initial weights must not depend on whether the data came from the cache
    pl.seed_everything(cfg.seed, workers=True)
    module = build_module(cfg, dm, run_info)
    if cfg.init_from is not None:
        initialise_from(module, cfg.init_from)
    trainer = None
    status = "failed"
    try:
        trainer = build_trainer(cfg, run_dir)
        for logger in trainer.loggers:
            logger.log_hyperparams(run_info["config"])
        started = time.perf_counter()
        epochs = 0
        if module.model.requires_training:
            # every checkpoint Lightning reads is read weights-only (also forced by AtomicCheckpointIO);
            # a resumed run reads only ckpt_path (checked by check_resume) and files in its own
            # folder that were checked when carried over (RunCheckpoint)
            trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path, weights_only=True)
            epochs = trainer.current_epoch
            best = best_checkpoint(trainer)
            trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False, weights_only=True)
            trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False, weights_only=True)
        else:  # count baselines: fitted on the split's training events, no gradient steps
            module.model.fit(*dm.train_events())
            trainer.validate(module, datamodule=dm, verbose=False)
            trainer.test(module, datamodule=dm, verbose=False)
            best = str(run_dir / "checkpoints" / "best.ckpt")
            trainer.save_checkpoint(best)
        train_seconds = time.perf_counter() - started
        status = "success"
    except Diverged as err:
        diverged = Diverged(divergence_message(cfg, run_dir, err), err.where)
        if trainer is None or trainer.is_global_zero:
            write_diverged_report(run_dir, diverged)
        raise diverged from None
    finally:
        close_loggers(trainer, status)

    report = {
        "status": "ok",
        "val": module.results.get("val", {}),
        "test": module.results.get("test", {}),
        "optimized_metric": cfg.optimized_metric,
        "best_checkpoint": best,
        "epochs": epochs,
        "resumed_from": cfg.ckpt_path,
        "train_seconds": round(train_seconds, 3),
        "seconds_per_epoch": round(train_seconds / (epochs - first_epoch), 3) if epochs > first_epoch else None,
        "data": summary,
        "notes": model_notes(cfg.model, summary),
        "filter_seen": module.filter_seen,
        "scale_weights": module.scale_weight_history,
        "version": __version__,
    }
    report["objective"] = objective(report, cfg.optimized_metric)
    if trainer.is_global_zero:
        write_test_cases(run_dir / CASES_FILE, module, dm)
        write_run_report(run_dir, report)
    return report


def divergence_message(cfg: DictConfig, run_dir: Path, err: Diverged) -> str:
    """The one line of a diverged run: where (from ``err``), what it kept, what to try."""
    kept = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    if kept:
        saved = (
            f"checkpoints/{' and '.join(kept)} (written before it) keep finite weights; "
            f"init_from={run_dir / 'checkpoints' / kept[-1]} starts a new run from them"
        )
    else:
        saved = "no checkpoint was written before it"
    lr = OmegaConf.select(cfg, "optimizer.lr")
    clip = OmegaConf.select(cfg, "trainer.gradient_clip_val")
    clipping = f"a smaller trainer.gradient_clip_val (now {clip})" if clip else "trainer.gradient_clip_val=1.0"
    return f"{err}; {saved}; try a lower optimizer.lr (now {lr}, e.g. a tenth) or {clipping}"


def write_diverged_report(run_dir: Path, err: Diverged) -> None:
    """``metrics.json`` of a run that diverged: status ``diverged``, where, and the checkpoints
    it kept (written before the divergence, with finite weights)."""
    kept = sorted(str(p) for p in (run_dir / "checkpoints").glob("*.ckpt"))
    write_json_atomic(
        run_dir / "metrics.json",
        {
            "status": "diverged",
            "error": str(err),
            "diverged_at": err.where,
            "checkpoints_kept": kept,
            "val": {},
            "test": {},
            "version": __version__,
        },
    )
