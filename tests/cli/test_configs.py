"""Every YAML file under ``conf/``: it parses, its ``_target_``s import, and every option of every
config group composes into the train config, passes the config checks and instantiates (data
module, model with its partials called, loss, optimizer, trainer with callbacks and loggers)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from recsys_cli.builders import build, build_datamodule, build_model, build_objective, build_trainer
from recsys_cli.checks import validate_config
from recsys_cli.commands import command_arguments, commands, key_comments
from recsys_cli.compose import check_resolvable, compose_train, config_groups, group_options
from recsys_cli.config_paths import CONF_DIR
from recsys_cli.contract import DataSpec, ScaleSet
from recsys_cli.errors import ConfigError

ALL_YAML = sorted(CONF_DIR.rglob("*.yaml"))
# a shared parent of the dataset files (name: ???, no reader), not an option to choose
NOT_OPTIONS = {("data", "base")}
# groups that exist only under an option of another group
NEEDS = {"model/item/projection": "model/item=text", "model/item/fusion": "model/item=id_text"}


def targets(node) -> list[str]:
    """Every ``_target_`` in a config tree."""
    found = []
    if isinstance(node, DictConfig):
        for key in node:
            if key == "_target_":
                found.append(node[key])
            else:
                found += targets(node._get_node(key))
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            found += targets(node._get_node(i))
    return found


# options that compose only with others: a bidirectional encoder trains by cloze, and cloze reads
# no time-window scales (each is refused alone, in one line, by the config checks)
OPTION_NEEDS = {
    ("model/encoder", "bert"): ["task=cloze", "scales=none"],
    ("task", "cloze"): ["model/encoder=bert", "scales=none"],
}


def option_overrides() -> list:
    params = [pytest.param(None, id="defaults")]
    for group in config_groups():
        if group == "hydra" or group.startswith("hydra/"):
            continue
        for option in group_options(group):
            if (group, option) in NOT_OPTIONS:
                continue
            prefix = "+" if group == "experiment" else ""
            override = f"{prefix}{group}={option}"
            if group in NEEDS:
                override = [NEEDS[group], override]
            if (group, option) in OPTION_NEEDS:
                override = [*OPTION_NEEDS[group, option], override]
            params.append(pytest.param(override, id=f"{group}={option}"))
    return params


def test_the_walk_finds_every_yaml_file():
    groups = set(config_groups())
    assert {"model", "model/encoder", "data/split", "experiment", "logger", "trainer"} <= groups
    in_groups = {p for p in ALL_YAML if str(p.parent.relative_to(CONF_DIR)) in groups}
    top_level = {p.name for p in ALL_YAML if p.parent == CONF_DIR}
    assert in_groups | {CONF_DIR / name for name in top_level} == set(ALL_YAML)
    # the registry's rule: train's config, and one file per verb that has keys of its own
    own = {f"{c.name}.yaml" for c in commands().values() if c.config}
    assert top_level == {"train.yaml"} | own


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(CONF_DIR)))
def test_yaml_parses_and_targets_import(path: Path):
    text = path.read_text()
    assert yaml.safe_load(text) is not None or text.strip() in ("", "{}")
    for target in targets(OmegaConf.load(path)):
        assert callable(get_object(target)), f"{path}: _target_ {target} is not callable"


def test_experiment_is_not_in_the_root_defaults():
    defaults = OmegaConf.load(CONF_DIR / "train.yaml").defaults
    names = [next(iter(d)) if isinstance(d, DictConfig) else str(d) for d in defaults]
    assert not any("experiment" in n for n in names)


@pytest.mark.parametrize("name", group_options("experiment"))
def test_experiment_files_open_with_package_and_command(name):
    lines = (CONF_DIR / "experiment" / f"{name}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_"
    # the command, then the values it needs (e.g. data.path=...), if any
    assert (lines[1] + " ").startswith(f"# recsys train +experiment={name} ")


@pytest.mark.parametrize("name", [c.name for c in commands().values() if c.config])
def test_every_key_of_a_verb_has_a_comment_and_required_keys_are_named(name):
    path = CONF_DIR / f"{name}.yaml"
    cfg = OmegaConf.load(path)
    comments = key_comments(path)
    assert set(comments) == set(cfg.keys()) and all(comments.values()), comments
    required = [k for k in cfg if OmegaConf.is_missing(cfg, k)]
    if required:
        with pytest.raises(ConfigError, match=f"recsys {name} needs {required[0]}="):
            command_arguments(name, [])


def test_verb_arguments_split_into_own_keys_and_run_overrides():
    cfg, rest = command_arguments(
        "evaluate", ["ckpt=a/b.ckpt", "data/split=temporal", "+stage=val", "hydra.run.dir=out", "model.dim=8"],
        {"hydra.run.dir": "output_dir"},
    )
    assert (cfg.ckpt, cfg.stage, cfg.output_dir, cfg.ablate_scales) == ("a/b.ckpt", "val", "out", False)
    assert rest == ["data/split=temporal", "model.dim=8"]
    with pytest.raises(ConfigError, match="ablate_scales='yes please': use true or false"):
        command_arguments("evaluate", ["ckpt=x", "ablate_scales=yes please"])


def test_a_new_verb_is_one_module_and_one_config():
    """The registry finds a verb from its module alone; the one-verb-per-module layout holds."""
    verbs = commands()
    assert list(verbs)[:3] == ["train", "evaluate", "prepare"]
    for name, command in verbs.items():
        module = importlib.import_module(f"recsys_cli.commands.{name}")
        assert module.COMMAND is command and callable(command.run)
        # train is Hydra's app on conf/train.yaml; prepare reads train's overrides
        assert (CONF_DIR / f"{name}.yaml").is_file() == (command.config or command.hydra_app)


def test_hydra_config_builds_the_sweep_summary():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    assert cfg.hydra.job.chdir is False
    callbacks = [instantiate(c) for c in cfg.hydra.callbacks.values()]
    assert any(type(c).__name__ == "SweepSummary" for c in callbacks)


@pytest.mark.parametrize("override", option_overrides())
def test_option_composes_validates_and_instantiates(override, tmp_path, tiny_language_model):
    overrides = [] if override is None else override if isinstance(override, list) else [override]
    cfg = compose_train([*overrides, f"item_text.model={tiny_language_model}"])
    if "path" in cfg.data.keys() and OmegaConf.is_missing(cfg.data, "path"):
        cfg = compose_train([*overrides, f"data.path={tmp_path / 'raw'}"])
    if not torch.cuda.is_available() and cfg.trainer.accelerator != "cpu":
        cfg.trainer.accelerator, cfg.trainer.devices = "cpu", 1
    cfg.paths.run_dir = str(tmp_path / "run")
    cfg.paths.cache_dir = str(tmp_path / "cache")
    check_resolvable(cfg)
    validate_config(cfg)

    dm = build_datamodule(cfg)
    assert dm.max_len == cfg.data.max_len and callable(dm.split_fn)
    spec = DataSpec(
        num_items=50, num_users=4, max_len=cfg.data.max_len, scales=ScaleSet.from_config(cfg.scales),
        event_types=("view", "cart", "buy"), stat_names=tuple(f"s{i}" for i in range(9)),
        item_fields={"title": tuple(f"item {i}" for i in range(1, 51))},
    )  # fmt: skip
    model = build_model(cfg, spec)
    assert isinstance(model, torch.nn.Module) and isinstance(model.requires_training, bool)
    loss = build_objective(cfg)
    assert callable(loss)
    optimizer = build(cfg.optimizer, "optimizer")([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.Optimizer)
    trainer = build_trainer(cfg, tmp_path / "run")
    names = {type(c).__name__ for c in trainer.callbacks}
    assert {"RunCheckpoint", "EarlyStopping"} <= names
    assert len(trainer.loggers) == len(cfg.logger)


def test_the_default_optimizer_is_fused_and_steps_like_the_unfused_one():
    """``optimizer.fused=true`` (torch's fused AdamW) changes the speed of a step, not the step."""
    cfg = compose_train(["optimizer.weight_decay=0.01"])
    assert cfg.optimizer.fused is True
    torch.manual_seed(0)
    start, grads = torch.randn(50, 8), [torch.randn(50, 8) for _ in range(5)]
    weights = []
    for fused in (True, False):
        p = torch.nn.Parameter(start.clone())
        optimizer = build(cfg.optimizer, "optimizer")([p], fused=fused)
        for g in grads:
            p.grad = g.clone()
            optimizer.step()
        weights.append(p.detach())
    assert not torch.equal(weights[0], start)
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-6, atol=1e-6)
