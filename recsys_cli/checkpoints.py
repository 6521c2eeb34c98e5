"""What a checkpoint carries for ``recsys evaluate`` and resuming, and reading older formats.

Format 3 (this version): the sequence model's parts (``model.inputs``, ``model.state``,
``model.heads``, ``model.scoring``; :mod:`recsys_cli.models.parts`). Older checkpoints are
upgraded when read for evaluation, one format at a time, and give the numbers they gave:

- format 1 (before the model contract): the config gets ``model.item=id`` and
  ``objective.next_item`` from ``loss``, loses the copies ``model.scales``, ``model.max_len`` and
  ``data.scales``, and the item embedding weights are renamed;
- format 2 (the contract, before the parts): the sequence model's config gets the part nodes its
  flat switches meant and its weights the parts' names (:mod:`recsys_cli.models.upgrade`).

Resuming training from an older ``last.ckpt`` is refused with one line (Lightning reads that
file itself).
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from recsys_cli import __version__
from recsys_cli.errors import ConfigError
from recsys_cli.io import load_checkpoint
from recsys_cli.models.upgrade import upgrade_model_config, upgrade_weight_name

CHECKPOINT_FORMAT = 3
# what each older format came before (said when resuming one is refused)
_BEFORE = {1: "before the model contract", 2: "before the sequence model's parts"}
_SEQUENCE_MODEL = "recsys_cli.models.recommender.SequenceRecommender"
_TRANSFORMER = "recsys_cli.models.encoders.TransformerEncoder"
# the Transformer block of the runs saved before `norm` and `activation` were config keys
_TRANSFORMER_BEFORE_KEYS = {"norm": "pre", "activation": "gelu"}


def make_run_info(cfg: DictConfig, item_vocab: list, fingerprint: str) -> dict[str, Any]:
    """What a checkpoint carries so that ``recsys evaluate`` needs nothing else."""
    return {
        "format": CHECKPOINT_FORMAT,
        "program": "recsys",
        "version": __version__,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "item_vocab": [str(v) for v in item_vocab],
        "num_items": len(item_vocab),
        "data_fingerprint": fingerprint,
    }


def upgrade_format_1(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A format 1 checkpoint in format 2 (config keys and weight names; the weights' values as stored)."""
    ckpt = dict(ckpt)
    info = ckpt["recsys"] = copy.deepcopy(ckpt["recsys"])
    config = info["config"]
    model = config.get("model", {})
    if model.get("_target_") == _SEQUENCE_MODEL:
        model.pop("scales", None)
        model.pop("max_len", None)
        model["item"] = {"_target_": "recsys_cli.models.items.IdEmbedding", "_partial_": True}
    config.get("data", {}).pop("scales", None)
    loss = config.pop("loss", None)
    if loss is not None:
        config["objective"] = {"next_item": {**loss, "weight": 1.0}}
    info["format"] = 2
    ckpt["state_dict"] = {
        ("model.items.embedding.weight" if key == "model.item_embedding.weight" else key): value
        for key, value in ckpt["state_dict"].items()
    }
    return ckpt


def upgrade_format_2(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A format 2 checkpoint in format 3: a sequence model's part nodes and weight names."""
    ckpt = dict(ckpt)
    info = ckpt["recsys"] = copy.deepcopy(ckpt["recsys"])
    config = info["config"]
    sequence = config.get("model", {}).get("_target_") == _SEQUENCE_MODEL
    if "model" in config:
        config["model"] = upgrade_model_config(config["model"])
    info["format"] = 3
    if sequence:
        ckpt["state_dict"] = {
            (f"model.{upgrade_weight_name(key[6:])}" if key.startswith("model.") else key): value
            for key, value in ckpt["state_dict"].items()
        }
    return ckpt


def fill_encoder_keys(config: dict[str, Any]) -> None:
    """A Transformer encoder saved before ``norm`` and ``activation`` were keys was built with the
    class defaults of its time, pre-norm GELU blocks: write them in (in place), so that the model
    rebuilt from the config is the one trained (the defaults are now the config's, post / relu)."""
    encoder = config.get("model", {}).get("encoder")
    if isinstance(encoder, dict) and encoder.get("_target_") == _TRANSFORMER:
        for key, value in _TRANSFORMER_BEFORE_KEYS.items():
            encoder.setdefault(key, value)


def load_run_checkpoint(path: str | Path, key: str = "ckpt", resume: bool = False) -> dict[str, Any]:
    """Read a recsys checkpoint (weights only) in the current format, upgrading older ones.

    ``resume=True``: the checkpoint is to be resumed by Lightning, which reads the file itself, so
    an older format is refused (one line saying what to do) instead of upgraded.
    """
    ckpt = load_checkpoint(path, key=key)
    found = ckpt["recsys"].get("format", 1)
    if not isinstance(found, int) or found > CHECKPOINT_FORMAT:
        raise ConfigError(
            f"{key}={path}: checkpoint format {found!r} was written by a newer recsys "
            f"(this is {__version__}, format {CHECKPOINT_FORMAT}); upgrade recsys to read it"
        )
    if found < CHECKPOINT_FORMAT and resume:
        raise ConfigError(
            f"{key}={path}: the checkpoint comes from an older recsys (format {found}, {_BEFORE.get(found, 'an older format')}) "
            "and cannot be resumed by this version; `recsys evaluate` still reads it. "
            "Retrain with this version (same command without ckpt_path)"
        )
    if found == 1:
        ckpt = upgrade_format_1(ckpt)
    if ckpt["recsys"].get("format") == 2:
        ckpt = upgrade_format_2(ckpt)
    fill_encoder_keys(ckpt["recsys"]["config"])
    return ckpt


def initialise_from(module: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load every weight of the checkpoint at ``path`` whose name and shape match ``module``'s
    (``init_from=CKPT``: pretrain on one log, fine-tune on another); the rest keep their
    initialisation. Returns the names ``loaded``, ``skipped`` (the shape differs: e.g. an id table
    of another catalogue) and ``missing`` (not in the checkpoint), and prints them by component."""
    stored = load_run_checkpoint(path, key="init_from")["state_dict"]
    own = module.state_dict()
    report: dict[str, list[str]] = {"loaded": [], "skipped": [], "missing": []}
    for name, value in stored.items():
        fits = name in own and tuple(own[name].shape) == tuple(value.shape)
        report["loaded" if fits else "skipped"].append(name)
    report["missing"] = [name for name in own if name not in stored]
    module.load_state_dict({name: stored[name] for name in report["loaded"]}, strict=False)

    def by_part(names: list[str]) -> str:
        parts = Counter(".".join(name.split(".")[:2]) for name in names)
        return ", ".join(f"{part} ({n})" for part, n in sorted(parts.items())) or "none"

    print(f"init_from={path}: loaded {len(report['loaded'])} tensors: {by_part(report['loaded'])}")
    if report["skipped"]:
        details = ", ".join(
            f"{n} {list(stored[n].shape)} vs {list(own[n].shape) if n in own else 'absent here'}" for n in report["skipped"]
        )
        print(f"init_from: skipped {len(report['skipped'])} (other shape or not in this model): {details}")
    if report["missing"]:
        print(f"init_from: {len(report['missing'])} tensors of this model keep their initialisation: {by_part(report['missing'])}")
    return report
