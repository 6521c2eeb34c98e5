"""The verbs of the ``recsys`` command: a registry in which a verb is one module and one config file.

Every module of this package that defines ``COMMAND`` (a :class:`Command`) is a verb; ``recsys
--help`` lists them by ``order``. A verb's own keys live in ``conf/<name>.yaml`` (each with a
comment, which ``recsys <name> --help`` prints); :func:`command_arguments` splits a command line into
those keys (checked against the YAML's types) and the rest, which a verb that reads a checkpoint
applies to the run's config. ``train`` is the exception: it is a Hydra application on
``conf/train.yaml`` (overrides, ``-m`` sweeps, ``--cfg``, ``--help``), and ``prepare`` composes
the train config too, so neither has a file of its own.

Adding a verb ``report``: ``recsys_cli/commands/report.py`` with ``COMMAND = Command(name="report",
...)`` and ``conf/report.yaml``; nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from recsys_cli.config_paths import CONF_DIR
from recsys_cli.errors import ConfigError


@dataclass(frozen=True)
class Command:
    """One verb of ``recsys``.

    ``run(argv)`` does the work (``argv``: the arguments after the verb) and raises a RecsysError
    for a user error. ``summary`` is its line in ``recsys --help`` (the usage, then what it does);
    ``help`` is what ``recsys <name> --help`` prints above the keys of its config file.
    ``config``: ``True`` when ``conf/<name>.yaml`` holds the verb's own keys. ``hydra_app``: the verb
    reads ``--help`` and Hydra's other flags itself (``train``).
    """

    name: str
    summary: str
    help: str
    run: Callable[[list[str]], None]
    config: bool = True
    order: int = 50
    hydra_app: bool = False

    @property
    def config_path(self) -> Path | None:
        """``conf/<name>.yaml``, or None for a verb without a config file of its own."""
        return CONF_DIR / f"{self.name}.yaml" if self.config else None


def commands() -> dict[str, Command]:
    """Every verb of this package, by name, in the order ``recsys --help`` lists them."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        command = getattr(module, "COMMAND", None)
        if isinstance(command, Command):
            found.append(command)
    return {c.name: c for c in sorted(found, key=lambda c: (c.order, c.name))}


def key_comments(path: Path) -> dict[str, str]:
    """The comment lines right above each top-level key of a command's YAML file, joined."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            pending.append(line.lstrip("#").strip())
        elif line and not line[0].isspace() and ":" in line:
            comments[line.split(":", 1)[0].strip()] = " ".join(pending)
            pending = []
        else:
            pending = []
    return comments


def _checked(key: str, value: object, default: object, raw: str) -> object:
    """``value`` (read as YAML) if it has the type of the key's default in the YAML file."""
    if default is None or default == "???":
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={raw!r}: use true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={raw!r}: use an integer (e.g. {key}={default})")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}={raw!r}: use a number (e.g. {key}={default})")
        return float(value)
    if isinstance(default, str):
        if isinstance(value, list | dict):
            raise ConfigError(f"{key}={raw!r}: use a single value (e.g. {key}={default})")
        return str(value)
    if isinstance(default, list) and not isinstance(value, list):
        return [value]
    return value


def command_arguments(
    name: str, argv: list[str], aliases: dict[str, str] | None = None
) -> tuple[DictConfig, list[str]]:
    """Split a verb's arguments into its config (``conf/<name>.yaml`` with the given keys set, each
    value read as YAML and checked against the type of the file's default) and the other
    arguments, in order. ``aliases`` maps other spellings of a key to it (``hydra.run.dir`` ->
    ``output_dir``). A required key (``???``) left unset is one error line, with its comment."""
    path = CONF_DIR / f"{name}.yaml"
    defaults = yaml.safe_load(path.read_text()) or {}
    cfg = OmegaConf.create(defaults)
    aliases = aliases or {}
    rest = []
    for item in argv:
        key, sep, raw = item.lstrip("+").partition("=")
        key = aliases.get(key, key)
        if key not in defaults:
            rest.append(item)
            continue
        value = yaml.safe_load(raw) if sep and raw else None
        cfg[key] = _checked(key, value, defaults[key], raw)
    for key in cfg:
        if OmegaConf.is_missing(cfg, key) or (defaults[key] == "???" and cfg[key] is None):
            comment = key_comments(path).get(key, "")
            raise ConfigError(f"recsys {name} needs {key}=...: {comment} (see recsys {name} --help)")
    return cfg, rest


def command_help(command: Command) -> str:
    """What ``recsys <name> --help`` prints: its help, then its config file (keys and comments)."""
    path = command.config_path
    if path is None:
        return command.help
    return f"{command.help}\n\nKeys ({path}):\n\n{path.read_text().rstrip()}"
