"""A trained run rebuilt from its checkpoint alone: what every command that reads a checkpoint
starts from (``recsys evaluate``, ``recommend``, ``export``).

The checkpoint carries the run's resolved config and item vocabulary (:mod:`recsys_cli.checkpoints`;
older formats are upgraded when read, always weights-only). :func:`load_run` applies the command
line's overrides to that config, rebuilds the data module (prepared data from the cache, or
prepared again, deterministically), checks the item vocabulary against the stored one, builds the
module and loads the weights. The users' raw ids come with the prepared data (the same list as the
run's ``vocab/users.parquet``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from recsys_cli.builders import apply_threads, build_datamodule, build_module
from recsys_cli.checkpoints import load_run_checkpoint
from recsys_cli.compose import compose_train, config_groups
from recsys_cli.data.datamodule import SequenceDataModule
from recsys_cli.data.prepared_data import PreparedData
from recsys_cli.errors import ConfigError
from recsys_cli.run_folders import run_folder_of
from recsys_cli.training.module import RecommenderModule


@dataclass
class LoadedRun:
    """A run rebuilt from a checkpoint, its weights loaded (the module in eval mode).

    ``info``: what the checkpoint carries (``format``, ``config``, ``item_vocab``,
    ``data_fingerprint``...); ``cfg``: the run's config with the overrides applied;
    ``overrides``: those overrides, as given; ``run_dir``: the run folder holding the checkpoint
    (None for a checkpoint outside one).
    """

    ckpt_path: str
    info: dict
    cfg: DictConfig
    overrides: list[str]
    dm: SequenceDataModule
    data: PreparedData
    module: RecommenderModule
    run_dir: Path | None

    @property
    def item_vocab(self) -> list[str]:
        """Raw id of item index i + 1 (as strings)."""
        return [str(v) for v in self.data.item_vocab]

    @property
    def user_vocab(self) -> list[str]:
        """Raw id of user index u (as strings)."""
        return [str(v) for v in self.data.user_vocab]


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


def load_run(ckpt_path: str, overrides: list[str]) -> LoadedRun:
    """Rebuild the run of ``ckpt_path`` with ``overrides`` of its config and load its weights.

    Prints the overrides applied (or none); a data fingerprint that differs from training's is a
    warning, an item vocabulary that differs (the weights would score other items) or weights
    that do not fit the model built from the config are one-line ConfigErrors.
    """
    ckpt = load_run_checkpoint(ckpt_path)  # a checkpoint of an older format is upgraded
    info = ckpt["recsys"]
    cfg = OmegaConf.create(info["config"])
    applied = apply_overrides(cfg, overrides)
    print(f"Overrides of the run's config: {' '.join(applied)}" if applied else "Overrides of the run's config: none")
    apply_threads(cfg)

    dm = build_datamodule(cfg)
    data = dm.load()
    stored = info["item_vocab"]
    if [str(v) for v in data.item_vocab] != stored:
        raise ConfigError(
            f"the data now has {data.num_items} items but the checkpoint was trained on {len(stored)} "
            "with a different item vocabulary; use the same dataset (check data.path and "
            "data.preparation)"
        )
    if data.fingerprint != info.get("data_fingerprint"):
        print(
            f"Warning: The prepared data differs from the data the run was trained on (fingerprint "
            f"{data.fingerprint}, trained on {info.get('data_fingerprint')}): the input files, the preparation "
            "settings or the code changed; results may differ from training's",
            file=sys.stderr,
        )
    module = build_module(cfg, dm, info)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise ConfigError(
            f"ckpt={ckpt_path}: the weights do not fit the model built from the config "
            f"({str(err).splitlines()[0][:160]}); do not override model.* or scales.* of a trained run"
        ) from None
    module.eval()
    return LoadedRun(str(ckpt_path), info, cfg, applied, dm, data, module, run_folder_of(ckpt_path))
