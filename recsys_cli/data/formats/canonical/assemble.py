"""Canonical assembly: the events and items frames of the reader contract (see ``base.py``).

:func:`build_events` / :func:`build_items` convert the named columns of a frame read from a
file and keep the rest as context; :func:`finish_events` makes the final dtype checks.
:func:`title_year` and :func:`year_of` are the shared parsers of the items' ``year`` field.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from recsys_cli.data.formats.canonical.columns import check_ids, to_datetime, to_float
from recsys_cli.data.formats.canonical.messages import Where
from recsys_cli.errors import DataError

log = logging.getLogger(__name__)

CANONICAL_EVENT_COLUMNS = ("user_id", "item_id", "timestamp", "event_type", "category", "rating")
# the config key naming extra categorical event columns (see ``canonical/context.py``)
CONTEXT_KEY = "data.columns.context"
# the items' text fields (Utf8), in the order the items frame holds them
ITEM_TEXT_COLUMNS = ("title", "category", "genres", "year", "brand", "description")
CANONICAL_ITEM_COLUMNS = ("item_id", *ITEM_TEXT_COLUMNS)
# the read statistic counting the rows dropped for invalid timestamps
INVALID_TIMES_DROPPED = "invalid_timestamps_dropped"
# a year in parentheses at the end of a title: "Toy Story (1995)"
TITLE_YEAR = r"\((\d{4})\)\s*$"


def text_or_null(expr: pl.Expr) -> pl.Expr:
    """Text with surrounding white space removed; null where empty."""
    text = expr.cast(pl.String).str.strip_chars()
    return pl.when(text != "").then(text)


def year_of(expr: pl.Expr) -> pl.Expr:
    """The first four-digit number of a value ("1995", 1995, "01-Jan-1995"); null if none."""
    return expr.cast(pl.String).str.extract(r"(?:^|\D)(\d{4})(?:\D|$)", 1)


def title_year(title: pl.Expr) -> pl.Expr:
    """The year in parentheses at the end of a title ("Toy Story (1995)" -> "1995"), else null."""
    return title.cast(pl.String).str.extract(TITLE_YEAR, 1)


def build_events(
    df: pl.DataFrame,
    where: Where,
    *,
    user: str,
    item: str,
    timestamp: str | None = None,
    unit: str = "s",
    event_type: str | None = None,
    category: str | None = None,
    rating: str | None = None,
    context: Mapping[str, str] | None = None,
    integer_ids: bool = False,
    event_map: Mapping[str, str] | None = None,
    drop: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    unit_key: str | None = None,
    time_format: str | None = None,
    on_invalid: str = "error",
    drop_key: str | None = None,
    allow_empty: bool = False,
    counts: dict[str, int] | None = None,
) -> pl.DataFrame:
    """The canonical events frame from ``df`` whose columns are named by the arguments.

    ``context`` ({name: column}, checked by ``canonical.context.context_mapping``) names the
    context columns of ``data.columns.context``: each becomes a text column ``name`` (null where
    missing or empty). Other columns (not consumed and not in ``drop``) are kept as they are; one
    whose name clashes with a canonical column or a context name gets the suffix ``_raw``. Rows dropped for invalid
    timestamps (``on_invalid='drop'``) are logged and added to ``counts`` (the reader's
    ``RawDataset.read_stats``, printed with the preparation statistics).
    """
    labels = dict(labels or {})

    def col(name: str) -> str:
        return labels.get(name, name)

    out: dict[str, pl.Series] = {
        "user_id": check_ids(df.get_column(user), where, col(user), "user id", integer=integer_ids),
        "item_id": check_ids(df.get_column(item), where, col(item), "item id", integer=integer_ids),
    }
    if timestamp is not None:
        out["timestamp"] = to_datetime(
            df.get_column(timestamp),
            where,
            col(timestamp),
            unit,
            unit_key=unit_key,
            fmt=time_format,
            on_invalid=on_invalid,
            drop_key=drop_key,
        )
    if event_type is not None:
        ev = df.get_column(event_type).cast(pl.String)
        if event_map:
            ev = ev.replace(dict(event_map))
        out["event_type"] = ev
    if category is not None:
        out["category"] = df.get_column(category).cast(pl.String)
    if rating is not None:
        out["rating"] = to_float(df.get_column(rating), where, col(rating), "rating")
    context = dict(context or {})
    for name, source in context.items():
        out[name] = _context_values(df.get_column(source), where, col(source), name)
    used = {user, item, timestamp, event_type, category, rating, *context.values(), *drop}
    frame = pl.DataFrame([s.rename(name) for name, s in out.items()])
    extras = []
    for name in df.columns:
        if name in used:
            continue
        clash = name in CANONICAL_EVENT_COLUMNS or name in context
        target = f"{name}_raw" if clash else name
        extras.append(df.get_column(name).rename(target))
    if extras:
        frame = frame.hstack(extras)
    if timestamp is not None and on_invalid == "drop":
        keep = frame.get_column("timestamp").is_not_null()
        dropped = frame.height - int(keep.sum())
        if dropped:
            log.warning("%s: dropped %d rows with invalid timestamps", where.path, dropped)
            frame = frame.filter(keep)
            if counts is not None:
                counts[INVALID_TIMES_DROPPED] = counts.get(INVALID_TIMES_DROPPED, 0) + dropped
    if frame.height == 0 and not allow_empty:
        raise DataError(f"{where.path}: no events left to read; check the file contents")
    return frame


def _context_values(values: pl.Series, where: Where, column: str, name: str) -> pl.Series:
    """Context column ``name`` as text, null where missing or empty; DataError for a column of
    lists or structs (a context column holds one value per event)."""
    if values.dtype.is_nested():
        raise DataError(
            f"{where.path}: column {column!r} ({CONTEXT_KEY}.{name}) holds {values.dtype} values; "
            "a context column needs one categorical value per event"
        )
    return values.cast(pl.String).replace("", None)


def build_items(
    df: pl.DataFrame,
    where: Where,
    *,
    item: str,
    title: str | None = None,
    category: str | None = None,
    genres: str | None = None,
    year: str | None = None,
    brand: str | None = None,
    description: str | None = None,
    drop: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    integer_ids: bool = False,
) -> pl.DataFrame:
    """The canonical items frame (one row per item id, the first occurrence wins).

    ``title`` and ``category`` are cast to text as they are; ``genres``, ``brand`` and
    ``description`` are trimmed text (null where empty); ``year`` is the first four-digit number
    of its column (null where none), see :func:`year_of`.
    """
    labels = dict(labels or {})
    cols = [
        check_ids(
            df.get_column(item), where, labels.get(item, item), "item id", integer=integer_ids
        ).rename("item_id")
    ]
    if title is not None:
        cols.append(df.get_column(title).cast(pl.String).rename("title"))
    if category is not None:
        cols.append(df.get_column(category).cast(pl.String).rename("category"))
    text = {"genres": genres, "year": year, "brand": brand, "description": description}
    for name, source in text.items():
        if source is not None:
            value = pl.col(source)
            if isinstance(df.schema[source], pl.List):  # several values: "|"-joined
                value = value.cast(pl.List(pl.String)).list.join("|")
            value = year_of(value) if name == "year" else text_or_null(value)
            cols.append(df.select(value.alias(name)).to_series())
    used = {item, title, category, *text.values(), *drop}
    for name in df.columns:
        if name not in used:
            target = f"{name}_raw" if name in CANONICAL_ITEM_COLUMNS else name
            cols.append(df.get_column(name).rename(target))
    return pl.DataFrame(cols).unique("item_id", keep="first", maintain_order=True)


def attach_item_category(events: pl.DataFrame, items: pl.DataFrame | None) -> pl.DataFrame:
    """Give events the category of their item (from the items table) when they have none."""
    if items is None or "category" not in items.columns or "category" in events.columns:
        return events
    table = items.select("item_id", "category")
    want = events.schema["item_id"]
    if table.schema["item_id"] != want:
        table = table.with_columns(pl.col("item_id").cast(want, strict=False)).drop_nulls("item_id")
    table = table.unique("item_id", keep="first")
    joined = events.join(table, on="item_id", how="left", maintain_order="left")
    return order_events(joined)


def order_events(events: pl.DataFrame) -> pl.DataFrame:
    """Canonical columns first (in the contract's order), then context columns."""
    first = [c for c in CANONICAL_EVENT_COLUMNS if c in events.columns]
    return events.select(first + [c for c in events.columns if c not in first])


def finish_events(events: pl.DataFrame, path: str | Path) -> pl.DataFrame:
    """Final dtype checks of a canonical events frame."""
    if events.height == 0:
        raise DataError(f"{path}: no events were read; check the file contents")
    casts = {"event_type": pl.String, "category": pl.String, "rating": pl.Float64}
    events = events.with_columns(
        pl.col(c).cast(t) for c, t in casts.items() if c in events.columns and events.schema[c] != t
    )
    return order_events(events)
