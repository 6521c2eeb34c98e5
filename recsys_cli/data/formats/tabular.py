"""Generic tabular logs: CSV (any separator, optionally gzip) or Parquet, with a column mapping.

``columns`` maps the canonical names to the file's columns, for example
``{user: visitor, item: sku, timestamp: ts, event_type: action}``; ``user`` and ``item`` are
required, ``timestamp`` / ``event_type`` / ``category`` / ``rating`` optional (without
``timestamp`` the file order is the time order). ``context`` maps names to further categorical
columns that models embed as context of each event, e.g. ``{device: device_type}`` (see
``canonical/context.py``; a named column missing from the file is an error naming the key).
Every other file column is kept as it is.

Timestamps (``timestamp_unit``): ``s`` / ``ms`` / ``us`` / ``ns`` since 1970 (integer or float),
``iso`` date-time strings (naive means UTC; ``timestamp_format`` gives a strftime format), or
``auto``: native datetimes as they are, strings as numbers when numeric else ISO, numbers by
magnitude (1e8..1e11 seconds, 1e11..1e14 milliseconds, ...), raising a DataError naming the
option when the range fits neither.

An optional items file (``items_path``, CSV or Parquet) with ``item_columns``
(``{item: ..., title: ..., category: ..., genres: ..., year: ..., brand: ..., description: ...}``;
by default the events' item column name and the columns literally named ``title``, ``category``,
``genres``, ``year``, ``brand``, ``description``) becomes the items table; ``year`` keeps the
first four-digit number of its column (``1995``, ``"1995-11-22"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import polars as pl

from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.data.formats.canonical.assemble import (
    ITEM_TEXT_COLUMNS,
    attach_item_category,
    build_events,
    build_items,
    finish_events,
)
from recsys_cli.data.formats.canonical.context import CONTEXT_KEY, context_mapping
from recsys_cli.data.formats.canonical.csv_files import read_csv, require_columns
from recsys_cli.data.formats.canonical.files import locate_file, require_file
from recsys_cli.data.formats.canonical.messages import Where, one_line, sep_name
from recsys_cli.data.formats.canonical.options import (
    INVALID_TIMESTAMPS,
    TIME_UNITS,
    check_choice,
    config_dict,
    normalize_encoding,
    normalize_separator,
)
from recsys_cli.errors import ConfigError, DataError

EVENT_KEYS = {
    "user": "user_id",
    "user_id": "user_id",
    "item": "item_id",
    "item_id": "item_id",
    "timestamp": "timestamp",
    "time": "timestamp",
    "event_type": "event_type",
    "event": "event_type",
    "category": "category",
    "rating": "rating",
}
ITEM_KEYS = {
    "item": "item_id",
    "item_id": "item_id",
    **{name: name for name in ITEM_TEXT_COLUMNS},
}
PARQUET = (".parquet", ".pq")


def _mapping(
    value: object,
    allowed: dict[str, str],
    key: str,
    required: tuple[str, ...],
    also: tuple[str, ...] = (),
) -> dict[str, str]:
    """{canonical name: file column} from a config mapping; ConfigError for unknown keys (the
    message lists ``allowed`` and the keys handled elsewhere, ``also``)."""
    raw = config_dict(value, key)
    out: dict[str, str] = {}
    for k, v in raw.items():
        if k not in allowed:
            raise ConfigError(
                f"{key}.{k}: unknown key; use {', '.join(sorted({*allowed, *also}))} "
                "(other file columns are kept as they are)"
            )
        if v is not None and v != "":
            out[allowed[k]] = v
    missing = [r for r in required if r not in out]
    if missing:
        raise ConfigError(
            f"{key} needs {', '.join(k.removesuffix('_id') for k in missing)}: e.g. "
            f"{key}={{user: user_id, item: item_id, timestamp: timestamp}}"
        )
    return out


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith(PARQUET)


class TabularReader(DatasetReader):
    """Reads any CSV / Parquet event log given a column mapping."""

    name = "tabular"

    def __init__(
        self,
        path: str,
        columns: dict,
        timestamp_unit: str = "auto",
        separator: str = ",",
        items_path: str | None = None,
        item_columns: dict | None = None,
        encoding: str = "utf-8",
        timestamp_format: str | None = None,
        invalid_timestamps: str = "error",
    ):
        self.path = str(path)
        columns = dict(columns) if isinstance(columns, Mapping) else columns
        context = columns.pop("context", None) if isinstance(columns, dict) else None
        self.columns = _mapping(
            columns, EVENT_KEYS, "data.columns", ("user_id", "item_id"), also=("context",)
        )
        self.context = context_mapping(context)
        self.timestamp_unit = check_choice(
            str(timestamp_unit), TIME_UNITS, "data.reader.timestamp_unit"
        )
        self.separator = normalize_separator(separator)
        self.items_path = None if items_path in (None, "") else str(items_path)
        self.item_columns = _mapping(item_columns, ITEM_KEYS, "data.reader.item_columns", ())
        self.encoding = normalize_encoding(encoding)
        self.timestamp_format = timestamp_format or None
        self.invalid_timestamps = check_choice(
            invalid_timestamps, INVALID_TIMESTAMPS, "data.reader.invalid_timestamps"
        )

    # -- files -----------------------------------------------------------------------------
    def _paths(self) -> tuple[Path, Path | None]:
        what = "an event log (.csv, .tsv, .txt, .csv.gz or .parquet)"
        p = locate_file(self.path, what, "set data.path to the file", folder_hint="")
        items = Path(self.items_path) if self.items_path else None
        if items is not None:
            require_file(items, "an items table (.csv or .parquet)", "set data.reader.items_path")
        return p, items

    def source_files(self) -> list[Path]:
        events, items = self._paths()
        return [events] + ([items] if items else [])

    def _load(
        self, path: Path, required: list[str], hint: str, keys: dict[str, str] | None = None
    ) -> tuple[pl.DataFrame, Where]:
        if _is_parquet(path):
            try:
                df = pl.read_parquet(path)
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise DataError(
                    f"{path}: cannot read it as Parquet ({one_line(exc)}); is it a Parquet file? "
                    "CSV files need a .csv/.tsv/.txt name"
                ) from None
            require_columns(df.columns, required, path, hint=hint, keys=keys)
            if df.height == 0:
                raise DataError(f"{path} has no rows; expected an event log")
            return df, Where(path, first_line=1, kind="row")
        df = read_csv(
            path,
            separator=self.separator,
            required=required,
            encoding=self.encoding,
            what=f"a CSV file separated by {sep_name(self.separator)}",
            hint=hint,
            keys=keys,
        )
        return df, Where(path)

    # -- reading ---------------------------------------------------------------------------
    def read(self) -> RawDataset:
        path, items_path = self._paths()
        cols = self.columns
        keys = {column: f"{CONTEXT_KEY}.{name}" for name, column in self.context.items()}
        df, where = self._load(
            path,
            list(dict.fromkeys([*cols.values(), *self.context.values()])),
            "set data.columns.<name>"
            + (f" ({CONTEXT_KEY}.<name> for a context column)" if keys else "")
            + " to the file's column names",
            keys={c: k for c, k in keys.items() if c not in cols.values()},
        )
        labels = {v: v for v in cols.values()}
        counts: dict[str, int] = {}
        events = build_events(
            df,
            where,
            user=cols["user_id"],
            item=cols["item_id"],
            timestamp=cols.get("timestamp"),
            unit=self.timestamp_unit,
            event_type=cols.get("event_type"),
            category=cols.get("category"),
            rating=cols.get("rating"),
            context=self.context,
            labels=labels,
            unit_key="data.reader.timestamp_unit",
            time_format=self.timestamp_format,
            on_invalid=self.invalid_timestamps,
            drop_key="data.reader.invalid_timestamps",
            counts=counts,
        )
        items = self._items(items_path) if items_path is not None else None
        events = finish_events(attach_item_category(events, items), path)
        return RawDataset(
            events=events,
            items=items,
            source_files=self.source_files(),
            name=path.stem,
            read_stats=counts,
            context=tuple(self.context),
        )

    def _items(self, path: Path) -> pl.DataFrame:
        spec = dict(self.item_columns)
        item = spec.get("item_id", self.columns["item_id"])
        df, where = self._load(
            path,
            [item, *(v for k, v in spec.items() if k != "item_id")],
            "set data.reader.item_columns.<name> to the items file's column names",
        )
        text = {n: spec.get(n, n if n in df.columns else None) for n in ITEM_TEXT_COLUMNS}
        return build_items(df, where, item=item, **text)
