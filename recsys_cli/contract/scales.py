"""The time-window scale spec: parsed once from ``scales`` and handed to the data and the model.

A scale is ``{name, window, max_events}``:

- ``window``: a duration string (``45s``, ``30m``, ``6h``, ``1d``, ``2w``), ``{last: N}`` (the last N
  events, for data without timestamps), or ``null`` (all history);
- ``max_events``: at most this many of the newest events in the window (default: ``scales.max_events``).

Semantics (anchored at the last observed event): when predicting event t+1 from e_1..e_t, scale s
sees the events i <= t with ``time(e_t) - time(e_i) <= window`` (or ``t - i < N`` for ``last: N``),
the newest ``max_events`` of them. Nothing after t, nor the time of t+1, enters. Ties in time are
inside the window (a gap of exactly ``window`` is inside, a larger one outside).

Batches carry, for each case, the ``H + L`` most recent events up to its anchor (``L = max_len``
encoder inputs, ``H = history_len`` older events), so a scale can see up to ``H + 1`` events: long
scales see history beyond the encoder's ``max_len`` at a cost linear in ``H``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from recsys_cli.errors import ConfigError

POOLINGS = ("mean", "attention")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str, key: str) -> int:
    """``'30m'`` -> 1800 seconds; ConfigError naming ``key`` when malformed."""
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(
            f"{key}={text!r} is not a duration; write a number and a unit s/m/h/d/w "
            "(e.g. 30m, 1d), {last: N} for the last N events, or null for all history"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class TimeWindowScale:
    """One scale: a duration window (``seconds``), a count window (``last``) or all history."""

    name: str
    max_events: int
    seconds: int | None = None
    last: int | None = None

    def describe(self) -> str:
        if self.seconds is not None:
            span = f"{self.seconds}s"
        elif self.last is not None:
            span = f"last {self.last}"
        else:
            span = "all"
        return f"{self.name} ({span}, <= {self.max_events} events)"


def parse_scales(windows: Iterable[Mapping], default_max_events: int) -> list[TimeWindowScale]:
    """Build scales from the ``scales.windows`` config list, validating every entry."""
    scales: list[TimeWindowScale] = []
    for i, entry in enumerate(windows or []):
        key = f"scales.windows[{i}]"
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ConfigError(f"{key} must be a mapping with at least 'name' and 'window'")
        unknown = set(entry) - {"name", "window", "max_events"}
        if unknown:
            raise ConfigError(
                f"{key} has unknown keys {sorted(unknown)}; valid keys: name, window, max_events"
            )
        name = str(entry["name"])
        max_events = entry.get("max_events") or default_max_events
        if int(max_events) < 1:
            raise ConfigError(f"{key}.max_events={max_events}: use a positive number")
        window = entry.get("window")
        seconds = last = None
        if isinstance(window, Mapping):
            if set(window) != {"last"} or int(window["last"]) < 1:
                raise ConfigError(f"{key}.window={dict(window)}: a count window is {{last: N}}, N >= 1")
            last = int(window["last"])
        elif window is not None:
            seconds = parse_duration(window, f"{key}.window")
            if seconds <= 0:
                raise ConfigError(f"{key}.window={window!r}: the duration must be positive")
        scales.append(TimeWindowScale(name, int(max_events), seconds, last))
    names = [s.name for s in scales]
    if len(set(names)) != len(names):
        raise ConfigError(f"scales.windows: scale names must be unique, got {names}")
    return scales


def history_len(scales: list[TimeWindowScale], max_len: int) -> int:
    """How many events older than the encoder inputs a batch must carry (``H``)."""
    if not scales:
        return 0
    return max(s.max_events if s.last is None else min(s.last, s.max_events) for s in scales) - 1


@dataclass(frozen=True)
class ScaleSet:
    """The parsed ``scales`` config section: the windows, how a window's encoder states are pooled
    (``mean`` or ``attention``) and whether per-window statistics are inputs."""

    windows: tuple[TimeWindowScale, ...] = ()
    pooling: str = "attention"
    statistics: bool = False

    @classmethod
    def from_config(cls, node: Mapping | None) -> ScaleSet:
        """Parse and check ``scales`` (``windows``, ``max_events``, ``pooling``, ``statistics``)."""
        if not node:
            return cls()
        pooling = node.get("pooling", "attention")
        if pooling not in POOLINGS:
            raise ConfigError(f"scales.pooling={pooling!r}: valid choices are 'mean', 'attention'")
        windows = parse_scales(node.get("windows") or [], node.get("max_events"))
        return cls(tuple(windows), str(pooling), bool(node.get("statistics", False)))

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.windows]

    def __len__(self) -> int:
        return len(self.windows)

    def history_len(self, max_len: int) -> int:
        """``H``: how many events older than the ``max_len`` encoder inputs a batch carries."""
        return history_len(list(self.windows), max_len)
