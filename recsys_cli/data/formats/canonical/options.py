"""Reader settings from the config: encodings, separators, choices and column mappings.

Each function returns the normalised value or raises a ConfigError naming the config key.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping, Sequence

from recsys_cli.errors import ConfigError

# the choices of data.reader.timestamp_unit and data.reader.invalid_timestamps
TIME_UNITS = ("auto", "s", "ms", "us", "ns", "iso")
INVALID_TIMESTAMPS = ("error", "drop")


def normalize_encoding(encoding: str | None, key: str = "data.reader.encoding") -> str:
    """Canonical codec name ('utf-8', 'iso8859-1', ...); ConfigError for unknown names."""
    if encoding is None:
        return "utf-8"
    name = str(encoding).strip().lower()
    if name in ("utf8-lossy", "utf-8-lossy"):
        return "utf8-lossy"
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise ConfigError(
            f"{key}={encoding!r} is not a known text encoding; use e.g. utf-8, latin-1 or cp1252"
        ) from None


def normalize_separator(separator: str, key: str = "data.reader.separator") -> str:
    """One-character separator; accepts the spellings ``\\t``, ``tab``, ``comma`` ... ."""
    aliases = {
        "\\t": "\t",
        "tab": "\t",
        "comma": ",",
        "semicolon": ";",
        "pipe": "|",
        "space": " ",
    }
    sep = aliases.get(str(separator).lower(), str(separator))
    if len(sep) != 1:
        raise ConfigError(
            f"{key}={separator!r}: the separator must be one character (e.g. ',', ';', '|', or \\t for tab)"
        )
    return sep


def check_choice(value: str, choices: Sequence[str], key: str) -> str:
    """``value`` when it is one of ``choices``; ConfigError naming ``key`` otherwise."""
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}; set one of those")
    return value


def config_dict(value: object, key: str) -> dict:
    """A plain dict from a config mapping (Hydra passes DictConfig)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{key} must be a mapping like {{user: user_id, item: item_id}}, got {value!r}"
        )
    return {str(k): (None if v is None else str(v)) for k, v in value.items()}
