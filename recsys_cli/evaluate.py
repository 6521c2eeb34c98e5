"""``recsys evaluate ckpt=PATH``: rebuild a run from its checkpoint alone and evaluate it.

The checkpoint carries the run's resolved config and item vocabulary; the data module is rebuilt
from that config (prepared data comes from the cache or is prepared again, deterministically), the
vocabulary is checked against the stored one, and the weights are loaded with
``torch.load(weights_only=True)``. Overrides of the run's config are allowed and printed.
"""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recsys_cli.config_paths import CONF_DIR
from recsys_cli.errors import ConfigError
from recsys_cli.io import write_json_atomic
from recsys_cli.train import build_datamodule, build_module

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a recsys checkpoint safely (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        if path.is_dir() and (path / "checkpoints").is_dir():
            hint = f"; did you mean {path / 'checkpoints' / 'best.ckpt'}?"
        raise ConfigError(f"ckpt={path}: no such checkpoint file{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"ckpt={path}: not a readable PyTorch checkpoint ({first[:200]})") from None
    if not isinstance(ckpt, dict) or "recsys" not in ckpt or "state_dict" not in ckpt:
        raise ConfigError(
            f"ckpt={path}: not a recsys checkpoint (it has no 'recsys' section: written by another "
            "program?); pass a checkpoints/best.ckpt or last.ckpt from a recsys run directory"
        )
    return ckpt


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """Apply ``key=value`` (dotted key) and ``group=option`` (config group) overrides to a stored
    run config. Group options are read from ``conf/``; everything else stays as the run had it."""
    applied = []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.lstrip("+")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: write key=value (e.g. data.path=/data/ml-1m)")
        if "/" in key:  # a config group: compose it from conf/ and graft it in
            try:
                with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                    fresh = compose("train", overrides=[item])
            except (HydraException, OmegaConfBaseException) as err:
                raise ConfigError(f"override {item!r}: {str(err).splitlines()[0]}") from None
            dotted = key.replace("/", ".")
            OmegaConf.update(cfg, dotted, OmegaConf.select(fresh, dotted), merge=False)
        else:
            if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
                raise ConfigError(f"override {item!r}: the run's config has no key '{key}'")
            OmegaConf.update(cfg, key, yaml.safe_load(value) if value else None, merge=True)
        applied.append(item)
    return applied


def evaluate(ckpt_path: str, overrides: list[str], stage: str = "test", ablate_scales: bool = False) -> dict:
    if stage not in ("val", "test"):
        raise ConfigError(f"stage={stage!r}: use 'val' or 'test'")
    ckpt = load_checkpoint(ckpt_path)
    info = ckpt["recsys"]
    cfg = OmegaConf.create(info["config"])
    applied = apply_overrides(cfg, overrides)
    run_dir = Path(ckpt_path).resolve().parent.parent
    if applied:
        print(f"Overrides of the run's config: {' '.join(applied)}")

    dm = build_datamodule(cfg)
    data = dm.load()
    stored = info["item_vocab"]
    if [str(v) for v in data.item_vocab] != stored:
        raise ConfigError(
            f"the data now has {data.num_items} items but the checkpoint was trained on {len(stored)} "
            "with a different item vocabulary; evaluate on the same dataset (check data.path and "
            "data.preparation)"
        )
    module = build_module(cfg, dm, info)
    module.load_state_dict(ckpt["state_dict"])
    trainer = instantiate(cfg.trainer, callbacks=[], logger=False, enable_checkpointing=False, default_root_dir=str(run_dir))
    run = trainer.validate if stage == "val" else trainer.test

    results: dict[str, dict[str, float]] = {}
    run(module, datamodule=dm, verbose=False)
    results["all scales"] = module.results[stage]
    if ablate_scales:
        masks = getattr(module.model, "ablation_masks", lambda: [])()
        if not masks:
            raise ConfigError("+ablate_scales=true: this model has no time-window scales to remove")
        for name, keep in masks:
            module.keep = keep
            run(module, datamodule=dm, verbose=False)
            results[f"without {name}"] = module.results[stage]
        module.keep = None

    print(f"\nCheckpoint: {ckpt_path}\nSplit: {dm.split.description}, stage: {stage}")
    print(format_columns(results))
    report = {
        "checkpoint": str(ckpt_path),
        "stage": stage,
        "overrides": applied,
        "results": results,
        "data_fingerprint_now": data.fingerprint,
        "data_fingerprint_trained": info.get("data_fingerprint"),
    }
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    write_json_atomic(run_dir / "evaluations" / f"{stamp}.json", report)
    return report


def format_columns(results: dict[str, dict[str, float]]) -> str:
    """One column per result set (e.g. all scales, without session, ...)."""
    names = list(dict.fromkeys(m for r in results.values() for m in r))
    cols = list(results)
    width = max(len(n) for n in names)
    head = f"{'metric':<{width}}  " + "  ".join(f"{c:>16}" for c in cols)
    rows = [f"{n:<{width}}  " + "  ".join(f"{results[c].get(n, float('nan')):16.4f}" for c in cols) for n in names]
    return "\n".join([head, *rows])
