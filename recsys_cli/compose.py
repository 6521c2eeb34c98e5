"""Compose the train config from ``conf/`` with Hydra, turning Hydra's errors into one-line errors.

Hydra reports a mistyped option or key as a multi-line message (or a traceback) and only once the
run directory exists. :func:`compose_train` checks the overrides first (config group options
against the files in ``conf/``, keys against the composed config) and raises a
:class:`~recsys_cli.errors.ConfigError` that says what is wrong and what the valid choices are.
:func:`sweep_jobs` expands a ``-m`` sweep so that every value of every swept key can be checked
before the first job starts.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recsys_cli.config_paths import CONF_DIR
from recsys_cli.errors import ConfigError


def one_line(text: str, limit: int = 400) -> str:
    """``text`` with whitespace runs collapsed to single spaces, cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# config groups that moved, and where to (their options kept their names)
MOVED_GROUPS = {"loss": "objective/next_item"}
# keys that moved into a config group's option, and where to
MOVED_KEYS = {
    "model.temperature": "model.scoring.temperature (with model/scoring=cosine)",
    "model.learn_temperature": "model.scoring.learn_temperature (with model/scoring=cosine)",
}


def config_groups(conf_dir: Path = CONF_DIR) -> list[str]:
    """Every config group under ``conf_dir`` (``model``, ``model/encoder``, ...), sorted."""
    return sorted(
        str(d.relative_to(conf_dir)) for d in conf_dir.rglob("*") if d.is_dir() and any(d.glob("*.yaml"))
    )


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The options of one config group: the YAML files directly in ``conf/<group>/``."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def parse_overrides(overrides: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        bad = next((o for o in overrides if _unparsable(o)), " ".join(overrides))
        raise ConfigError(
            f"cannot read the override {bad!r} ({one_line(str(err).splitlines()[0], 160)}); "
            "write key=value, group=option, +new_key=value or ~key; quote values with spaces or commas"
        ) from None


def _unparsable(override: str) -> bool:
    try:
        OverridesParser.create().parse_overrides([override])
    except HydraException:
        return True
    return False


def _override_values(override: Override) -> list[str]:
    """The option names an override selects (several for a sweep or a list of options)."""
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    value = override.value()
    if isinstance(value, list):
        return [str(v) for v in value]
    return [] if value is None else [str(value)]


def check_group_overrides(parsed: list[Override], conf_dir: Path = CONF_DIR) -> None:
    """Raise unless every ``group=option`` names a YAML file of that group in ``conf_dir``."""
    groups = set(config_groups(conf_dir))
    for override in parsed:
        key = override.key_or_group
        if key == "hydra" or key.startswith("hydra/") or override.is_delete():
            continue
        if key in MOVED_GROUPS and key not in groups:
            value = override.value() if not override.is_sweep_override() else "..."
            raise ConfigError(
                f"{override.input_line}: the '{key}' group is now '{MOVED_GROUPS[key]}' (a term of the "
                f"training objective); write {MOVED_GROUPS[key]}={value}"
            )
        if key in MOVED_KEYS:
            raise ConfigError(f"{override.input_line}: {key} is now {MOVED_KEYS[key]}")
        if key not in groups:
            dotted_group = key.replace(".", "/")
            if "." in key and dotted_group in groups:
                options = group_options(dotted_group, conf_dir)
                value = override.value() if not override.is_sweep_override() else "..."
                choice = f"{dotted_group}={value}" if value in options else f"{dotted_group}=OPTION ({', '.join(options)})"
                raise ConfigError(
                    f"{override.input_line}: '{dotted_group}' is a config group; choose its option with {choice}"
                )
            continue
        options = group_options(key, conf_dir)
        for value in _override_values(override):
            if value not in options:
                hint = difflib.get_close_matches(value, options, n=1)
                did_you_mean = f" (did you mean {key}={hint[0]}?)" if hint else ""
                raise ConfigError(
                    f"{override.input_line}: config group '{key}' has no option '{value}'{did_you_mean}; "
                    f"valid options: {', '.join(options)}"
                )


def _unknown_key_message(key: str, item: str, cfg: DictConfig) -> str:
    """Explain an override of a key the config does not have: the closest keys and how to add it."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    where = f"'{parent_key}'" if parent_key else "the root config"
    if not isinstance(parent, DictConfig):
        return f"{item}: the config has no key '{key}' ({where} does not exist); add it with +{item}"
    keys = [str(k) for k in parent.keys()]
    hint = difflib.get_close_matches(leaf, keys, n=1)
    prefix = f"{parent_key}." if parent_key else ""
    did_you_mean = f"did you mean {prefix}{hint[0]}? " if hint else ""
    return (
        f"{item}: the config has no key '{key}'; {did_you_mean}keys of {where}: {', '.join(keys)} "
        f"(to add a new key write +{item})"
    )


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides)


def compose_train(overrides: list[str]) -> DictConfig:
    """The ``conf/train.yaml`` config with ``overrides``; any mistake is one ConfigError line.

    The result is not resolved (``paths.run_dir`` refers to Hydra's run directory).
    """
    parsed = parse_overrides(overrides)
    check_group_overrides(parsed)
    try:
        return _compose("train", overrides)
    except (HydraException, OmegaConfBaseException) as err:
        text = str(err)
        unknown = re.search(r"Could not override '([^']+)'", text)
        if unknown:
            key = unknown.group(1)
            item = next((o.input_line for o in parsed if o.key_or_group == key), key)
            if "/" in key:
                parent = key.rpartition("/")[0]
                raise ConfigError(
                    f"{item}: the chosen '{parent}' option has no '{key}' group (see recsys train --cfg job); "
                    f"remove the override or choose a {parent} that uses {key}"
                ) from None
            if key.startswith("hydra."):
                raise ConfigError(f"{item}: Hydra's config has no key '{key}'; see recsys train --hydra-help") from None
            groups_only = [o.input_line for o in parsed if o.key_or_group in set(config_groups())]
            try:
                base = _compose("train", groups_only)
            except (HydraException, OmegaConfBaseException):
                base = OmegaConf.create()
            raise ConfigError(_unknown_key_message(key, item, base)) from None
        if text.startswith("Ambiguous value for argument"):
            item = re.search(r"argument '(.+?)'\n", text)
            item = item.group(1) if item else "?"
            raise ConfigError(
                f"{item}: a comma-separated value is a sweep; add -m to run one job per value, "
                "write key=[a,b] for a list or quote it for a string"
            ) from None
        raise ConfigError(f"config composition failed: {one_line(text.split('Config search path')[0])}") from None


def check_resolvable(cfg: DictConfig) -> None:
    """Raise a ConfigError for a missing required value (``???``) or a broken ``${...}`` reference.

    ``paths.run_dir`` (Hydra's run directory) is not known before the run starts and is skipped.
    """
    probe = cfg.copy()
    OmegaConf.set_struct(probe, False)
    probe.paths.run_dir = "RUN_DIR"
    try:
        OmegaConf.to_container(probe, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        if type(err).__name__ == "MissingMandatoryValue":
            raise ConfigError(f"{key} is required (it is ??? in the config); set it, e.g. {key}=VALUE") from None
        raise ConfigError(f"{key}: {one_line(str(err).splitlines()[0], 200)}") from None


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Override lists that together use every value of every swept key at least once.

    Not the full product (that could be thousands of jobs): job ``i`` takes value ``i`` of every
    sweep (the last value once a sweep is exhausted), which checks each value once. Sweeps that
    cannot be listed (``interval(...)`` for an optimising sweeper) are left out.
    """
    parsed = parse_overrides(overrides)
    fixed: list[str] = []
    sweeps: list[tuple[str, list[str]]] = []
    for override in parsed:
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        try:
            values = list(override.sweep_string_iterator())
        except Exception:  # noqa: BLE001 - e.g. interval(): not listable, the sweeper samples it
            continue
        prefix = "++" if override.is_force_add() else "+" if override.is_add() else ""
        sweeps.append((f"{prefix}{override.get_key_element()}", values))
    if not sweeps:
        return [fixed]
    n = max(len(values) for _, values in sweeps)
    return [fixed + [f"{key}={values[min(i, len(values) - 1)]}" for key, values in sweeps] for i in range(n)]
