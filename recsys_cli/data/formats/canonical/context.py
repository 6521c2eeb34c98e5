"""Context columns: extra categorical event columns that the data config names.

``data.columns.context`` maps a name to a column of the event file, e.g. ``{device: device_type,
channel: utm_source}`` (a list, ``[device, channel]``, names columns by themselves). A reader
checks the names here (:func:`context_mapping`); ``build_events`` puts each column into the events
frame under its name, as text (null where missing or empty), and the reader lists the names in
``RawDataset.context``. Preparation codes each like the event types (sorted values -> 1..V,
0 = missing) into ``PreparedData.context``; batches carry them as the ``context`` field.

Names are identifiers (letters, digits, ``_``) and must not clash with the built-in context
features (:data:`BUILTIN_CONTEXT`) or the canonical event columns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from recsys_cli.data.formats.canonical.assemble import CANONICAL_EVENT_COLUMNS, CONTEXT_KEY
from recsys_cli.errors import ConfigError

__all__ = ["BUILTIN_CONTEXT", "CONTEXT_KEY", "RESERVED_NAMES", "context_mapping"]

# the context features the sequence models derive themselves (model.context)
BUILTIN_CONTEXT = ("hour", "weekday", "gap", "event_type", "category")
# names a context column cannot take: the built-in features and the canonical event columns
RESERVED_NAMES = tuple(dict.fromkeys((*BUILTIN_CONTEXT, *CANONICAL_EVENT_COLUMNS)))
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def context_mapping(value: object, key: str = CONTEXT_KEY) -> dict[str, str]:
    """{name: file column} from the config value (a mapping, a list of columns, or null); entries
    whose column is null or empty are left out. ConfigError (one line) for a bad name."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        pairs = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, Sequence) and not isinstance(value, str):
        pairs = [(str(v), v) for v in value]
    else:
        raise ConfigError(
            f"{key}={value!r}: expected a mapping from names to the file's columns, "
            f"e.g. {key}='{{device: device_type}}' (or a list of columns: {key}='[device]')"
        )
    out: dict[str, str] = {}
    for name, column in pairs:
        if column is None or str(column) == "":
            continue
        column = str(column)
        if name in RESERVED_NAMES:
            raise ConfigError(
                f"{key}.{name}: the name {name!r} clashes with a built-in context feature or event "
                f"column ({', '.join(RESERVED_NAMES)}); give the column another name, e.g. "
                f"{key}='{{{name}_2: {column}}}'"
            )
        if not _NAME.match(name):
            raise ConfigError(
                f"{key}.{name}: a context name is letters, digits and '_' (not starting with a "
                f"digit); e.g. {key}='{{device: {column}}}'"
            )
        out[name] = column
    return out
