"""Every command of the documentation runs as written.

Every ``recsys train`` / ``evaluate`` / ``prepare`` command of the README, the CHANGELOG,
``data/README.md`` and ``docs/`` (bash code blocks, and inline code that starts with ``recsys``) is
composed from ``conf/`` as the CLI would compose it, every job of a ``-m`` sweep included, and
validated, so a renamed group, option or key breaks this test. The train overrides that benchmark
scripts pass on (``bench_speed.py --override``, ``bench_scales.py --single / --multi / --extra``,
``synthetic_ceiling.py``'s arguments) are composed too, and the scripts a command names must exist.

Stand-ins in commands: ``...``, ``<what>`` and ALL-CAPS values (``PATH``, ``CKPT``) are not values:
a stand-in group option is skipped (with the keys under it), a stand-in key is only looked up.
``[key=value]`` marks an optional override, checked without its brackets.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from conftest import REPO
from doc_pages import Command, all_commands, recsys_calls, tokens
from omegaconf import DictConfig, OmegaConf

from recsys_cli.checks import validate_config
from recsys_cli.commands import commands
from recsys_cli.compose import (
    check_resolvable,
    compose_train,
    config_groups,
    parse_overrides,
    sweep_jobs,
)


def is_placeholder(value: str) -> bool:
    """``...``, ``<what>``, ``PATH`` or ``[overrides]``: words standing for values, not values."""
    return (
        value in ("...", "")
        or bool(re.search(r"<[^>]*>", value))
        or bool(re.fullmatch(r"[A-Z][A-Z_0-9]*", value))
        or bool(re.fullmatch(r"\[[^=]*\]", value))
    )


@dataclass
class Overrides:
    """A command's Hydra overrides, with what cannot be composed set apart."""

    items: list[str]
    multirun: bool = False
    # keys given a placeholder value: they must exist in the composed config
    keys: tuple[str, ...] = ()


# Hydra flags that take a value, and those that do not
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i"}
FLAGS = {"-m", "--multirun", "--help", "-h", "--hydra-help", "--resolve"}
# verbs whose operands are folders (recsys compare RUN_A RUN_B, recsys report RUN ...)
OPERAND_VERBS = {"compare", "report"}
# keys whose values are files a run reads: any value is a placeholder here
FILE_KEYS = {"ckpt_path", "init_from"}
GROUPS = frozenset(config_groups())


def overrides_of(args: list[str]) -> Overrides:
    """Sort a command's arguments into overrides to compose and keys to look up."""
    result = Overrides([])
    keys: list[str] = []
    # groups whose option is a placeholder (data=<config>): keys under them cannot be checked
    unknown: list[str] = []
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
            continue
        if arg in FLAGS:
            result.multirun |= arg in ("-m", "--multirun")
            continue
        if arg in FLAGS_WITH_VALUE:
            skip_next = True
            continue
        if arg.startswith("-"):
            raise AssertionError(f"unknown flag {arg!r}")
        if arg.startswith("[") and arg.endswith("]") and "=" in arg:
            arg = arg[1:-1]  # an optional override, written [key=value]
        if "=" not in arg:
            if is_placeholder(arg):
                continue
            raise AssertionError(f"{arg!r} is not an override (key=value, group=option)")
        key, _, value = arg.partition("=")
        bare = key.lstrip("+~")
        if bare in GROUPS and is_placeholder(value):
            unknown.append(bare.replace("/", ".") + ".")
        elif is_placeholder(value) or bare in FILE_KEYS:
            keys.append(bare)
        else:
            result.items.append(arg)
    prefixes = tuple(unknown)
    result.items = [item for item in result.items if not item.lstrip("+~").startswith(prefixes)]
    result.keys = tuple(key for key in keys if not key.startswith(prefixes))
    return result


def has_key(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` (dotted) exists in ``cfg``, a required ``???`` value included."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    return isinstance(parent, DictConfig) and (leaf in parent or OmegaConf.is_missing(parent, leaf))


@cache
def composed_groups(structural: tuple[str, ...]) -> DictConfig:
    return compose_train(list(structural))


def compose(items: list[str]) -> DictConfig:
    """What ``compose_train(items)`` gives, found faster: Hydra composes the group options (and
    ``hydra.*``, deletions) once per distinct set, many commands sharing one, and the ``key=value``
    overrides are then set on a copy, as Hydra sets them after composing. Anything this shortcut
    does not accept goes to ``compose_train`` itself, whose one-line error says what is wrong
    (:func:`test_the_shortcut_composes_what_compose_train_composes` compares the two)."""
    parsed = parse_overrides(items)
    structural, values = [], []
    for override in parsed:
        key = override.key_or_group
        structural_ = key in GROUPS or key.startswith("hydra") or override.is_delete()
        (structural if structural_ or override.is_sweep_override() else values).append(override)
    cfg = composed_groups(tuple(o.input_line for o in structural)).copy()
    try:
        for override in values:
            key, exists = override.key_or_group, has_key(cfg, override.key_or_group)
            if not override.is_force_add() and exists == override.is_add():
                raise KeyError(key)  # unknown key, or +key of a key that exists: Hydra refuses both
            OmegaConf.update(cfg, key, override.value(), merge=True, force_add=override.is_add())
    except Exception:  # noqa: BLE001 - compose_train raises the product's own error
        return compose_train(items)
    return cfg


def check_train_overrides(overrides: Overrides, validate: bool = True) -> int:
    """Compose every job of the overrides (with ``-m``: every value of every swept key, as
    ``recsys train`` checks them) and validate each; returns the number of jobs. Raises the CLI's
    one-line error on the first problem."""
    jobs = sweep_jobs(overrides.items) if overrides.multirun else [overrides.items]
    for job in jobs:
        cfg = compose(job)
        for key in overrides.keys:
            assert has_key(cfg, key), f"the config has no key '{key}'"
        if validate:
            check_resolvable(cfg)
            validate_config(cfg)
    return len(jobs)


def check_command(command: Command) -> int:
    """Check one documented command; returns how many configurations it composed."""
    words = tokens(command.text)
    composed = 0
    for verb, args in recsys_calls(words):
        if command.inline and not args:
            continue  # the command's name in a sentence
        command = commands()[verb]
        if command.config:
            # the verb's own keys (conf/<verb>.yaml: ckpt, stage, k, ...) apart, the rest overrides
            # the run's config: they must compose as train overrides (not validated: a stored run
            # has its own values, e.g. data.path)
            keys = OmegaConf.load(command.config_path)
            own = [a for a in args if a.partition("=")[0].lstrip("+") in set(keys.keys())]
            for key in keys.keys():
                if OmegaConf.is_missing(keys, key):
                    assert any(a.startswith(f"{key}=") for a in own), f"recsys {verb} needs {key}=..."
            rest = [a for a in args if a not in own]
            if verb in OPERAND_VERBS:  # their words without '=' are runs and sweeps, not overrides
                rest = [a for a in rest if "=" in a]
            composed += check_train_overrides(overrides_of(rest), validate=False)
        else:
            composed += check_train_overrides(overrides_of(args))
    composed += check_script(words)
    return composed


def option_values(words: list[str], flag: str) -> list[str]:
    """The values given to ``flag`` (``--flag value``, repeatable, or ``--flag v1 v2 ...``)."""
    values = []
    for i, word in enumerate(words):
        if word == flag:
            values += [w for w in _until_next_flag(words[i + 1 :])]
    return values


def _until_next_flag(words: list[str]) -> list[str]:
    out = []
    for word in words:
        if word.startswith("--"):
            break
        out.append(word)
    return out


def check_speed_harness(args: list[str]) -> int:
    """The speed harness's arguments parse, and the config it builds for each product contender
    (the preset's overrides, then each ``--override``) composes."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from speedbench.contenders import parse_contender, product_overrides
        from speedbench.presets import PRESETS
        from speedbench.run import parse_args
    finally:
        sys.path.remove(str(REPO / "scripts"))
    parsed = parse_args(args)
    if PRESETS[parsed.preset].data_path is not None:
        parsed.data_path = str(REPO)  # a folder that exists: composing never reads the dataset
    products = [c for c in parsed.contenders.split(",") if c.strip() and c.strip() != "reference"]
    for name in products:
        items = product_overrides(PRESETS[parsed.preset], parsed, Path("RUN_DIR"), parse_contender(name.strip()))
        check_train_overrides(Overrides(items), validate=False)
    return len(products)


def check_script(words: list[str]) -> int:
    """A ``python scripts/...`` or ``bash scripts/...`` command: the script exists, and the train
    overrides it passes on compose."""
    if len(words) < 2 or words[0] not in ("python", "bash") or not words[1].startswith("scripts/"):
        return 0
    script = REPO / words[1]
    assert script.is_file(), f"{words[1]} does not exist"
    name, args = script.name, words[2:]
    if name == "bench_speed.py":
        return check_speed_harness(args)
    if name == "bench_scales.py":
        extra = option_values(args, "--extra")
        composed = 0
        for flag in ("--single", "--multi"):
            for value in option_values(args, flag)[:1]:
                composed += check_train_overrides(overrides_of([value, *extra]), validate=False)
        return composed
    if name == "synthetic_ceiling.py":
        overrides = overrides_of(_until_next_flag([a for a in args if a != "--grid"]))
        overrides.multirun = "--grid" in args
        return check_train_overrides(overrides, validate=False)
    return 0


COMMANDS = all_commands()


def test_the_docs_have_commands():
    """The reader finds commands where the tests look for them (a broken fence would hide all)."""
    verbs = [v for c in COMMANDS for v, _ in recsys_calls(tokens(c.text))]
    assert verbs.count("train") >= 50 and "evaluate" in verbs and "prepare" in verbs, len(verbs)
    assert any(c.page.name == "README.md" and c.page.parent == REPO for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.page.relative_to(REPO)}:{c.line}")
def test_documented_command_composes(command: Command):
    try:
        check_command(command)
    except Exception as err:  # noqa: BLE001 - the message says which page, line and command
        pytest.fail(f"{command}\n  -> {type(err).__name__}: {err}", pytrace=False)


def test_placeholders_and_sweeps_are_read_as_the_cli_reads_them():
    """The command reader itself: a misspelt key fails, a placeholder is skipped, a sweep is
    composed once per group option, an optional [override] is checked."""
    ok = Command(
        REPO / "README.md",
        1,
        "recsys train -m model/encoder=gru,lstm seed=1,2 ckpt_path=<run>/last.ckpt",
    )
    assert check_command(ok) == 2
    for text in (
        "recsys train model.encodr.norm=pre",
        "recsys train [scales=sesion_only]",
        "recsys train -m model/encoder=gru,lstmm",
        "recsys train seed=1,2",  # a sweep without -m
        "recsys evaluate ckpt=... data/split=temporall",
        "python scripts/bench_speed.py --override model.encoder.nrom=pre",
        "python scripts/no_such_script.py",
        "recsys train +experiment=ml100k_sasrec data.paht=PATH",
    ):
        with pytest.raises(Exception):  # noqa: B017 - ConfigError, AssertionError, Hydra's
            check_command(Command(REPO / "README.md", 1, text))
    # a placeholder group option: the keys under that group cannot be checked, the others are
    assert (
        check_command(Command(REPO / "README.md", 1, "recsys prepare data=<config> data.path=PATH"))
        == 1
    )
    with pytest.raises(Exception):  # noqa: B017
        check_command(Command(REPO / "README.md", 1, "recsys prepare data=<config> modle.dim=8"))


@pytest.mark.parametrize(
    "items",
    [
        ["model.dim=128", "optimizer.lr=1e-3", "model/encoder=gru"],
        ["model.context=[hour,weekday,gap]", "model.user_embedding=true", "model/latent=vae"],
        [
            "+experiment=ml100k_sasrec",
            "data.path=data/raw/x",
            "scales=session_day_month_all",
            "seed=2",
        ],
        [
            "scales.windows=[{name: session, window: 30m, max_events: 20}, {name: all, window: null}]"
        ],
        [
            "data=tabular",
            "data.path=x.csv",
            "data.columns.user=visitor",
            "data.columns.context={device: d}",
        ],
        [
            "model/item=text",
            "item_text.template='{title} ({year})'",
            "+trainer.check_val_every_n_epoch=10",
        ],
        ["hydra.run.dir=/shared/runs/x", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
    ],
)
def test_the_shortcut_composes_what_compose_train_composes(items: list[str]):
    assert OmegaConf.to_container(compose(items)) == OmegaConf.to_container(compose_train(items))
    with pytest.raises(Exception):  # noqa: B017 - compose_train's ConfigError, as the CLI's
        compose([*items, "model.no_such_key=1"])
