"""The search space of ``recsys tune``, as an experiment file declares it (its ``tune.space``).

Each key is an override of the train config (a dotted key such as ``optimizer.lr``, or a config
group such as ``scales``) and each value says how to draw it::

    tune:
      space:
        optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}   # log-uniform
        model.dropout: {type: float, low: 0.0, high: 0.5}                   # uniform
        model.dim: {type: int, low: 32, high: 128, step: 32}
        model.encoder.num_layers: {type: categorical, choices: [1, 2, 3]}
        scales: {type: categorical, choices: [none, session_day_month_all]}  # a config group

A drawn value becomes the override ``key=value`` of the trial's run.
"""

from __future__ import annotations

import math
from typing import Any

from recsys_cli.errors import ConfigError

KINDS = ("float", "int", "categorical")


def check_space(space: Any) -> dict[str, dict[str, Any]]:
    """The space as plain dicts, checked: one ConfigError line naming ``tune.space.<key>``."""
    if not isinstance(space, dict) or not space:
        raise ConfigError("tune.space: declare at least one parameter, e.g. optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    checked = {}
    for key, spec in space.items():
        where = f"tune.space.{key}"
        if not isinstance(spec, dict) or spec.get("type") not in KINDS:
            raise ConfigError(f"{where}: give type: float, int or categorical (and low/high or choices)")
        extra = set(spec) - {"type", "low", "high", "log", "step", "choices"}
        if extra:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(extra))}; use type, low, high, log, step or choices")
        if spec["type"] == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: a categorical parameter needs choices: [a, b, ...]")
        else:
            low, high = spec.get("low"), spec.get("high")
            if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)) or low >= high:
                raise ConfigError(f"{where}: give numbers low < high (got low={low!r}, high={high!r})")
            if spec.get("log") and low <= 0:
                raise ConfigError(f"{where}: a log-uniform parameter needs low > 0 (got {low})")
        checked[str(key)] = dict(spec)
    return checked


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Draw every parameter of ``space`` with ``trial`` (an Optuna trial); ``{key: value}``."""
    params = {}
    for key, spec in space.items():
        if spec["type"] == "categorical":
            params[key] = trial.suggest_categorical(key, spec["choices"])
        elif spec["type"] == "int":
            params[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), step=int(spec.get("step") or 1), log=bool(spec.get("log")))
        else:
            step = spec.get("step")
            params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), step=step, log=bool(spec.get("log")))
    return params


def as_overrides(params: dict[str, Any]) -> list[str]:
    """``key=value`` overrides of the drawn parameters (floats in full precision)."""
    return [f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}" for key, value in params.items()]
