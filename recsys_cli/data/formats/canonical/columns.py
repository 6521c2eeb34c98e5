"""Column converters: ids, numbers and timestamps checked and cast to their canonical types.

A bad value raises a DataError naming the file, line, column and value (see
:class:`~recsys_cli.data.formats.canonical.messages.Where`).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import polars as pl

from recsys_cli.data.formats.canonical.messages import Where, first_row, short
from recsys_cli.errors import DataError

UTC_US = pl.Datetime("us", "UTC")

_US_PER = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
_UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
# Epoch seconds above this are after the year 5000: the unit must be wrong.
_MAX_PLAUSIBLE_SECONDS = 1e11
# Epoch seconds below this (1973-03-03) are no event times of a log whose other events are later
# (a placeholder such as 0), and a log whose events all are is read in a unit that is too fine
# when a coarser one gives dates after it (seconds read as milliseconds: all in January 1970).
_EARLIEST_PLAUSIBLE_SECONDS = 1e8
# Event times later than the present by more than this (clock skew, time zones) are invalid.
_FUTURE_MARGIN_SECONDS = 2 * 86400


def _day(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d")


def _check_unit(
    seconds: pl.Series, unit: str, where: Where, column: str, unit_key: str | None
) -> None:
    """DataError when every timestamp falls right after 1970 but a coarser unit reads them as
    dates of the last decades (the values' span and place say which unit they are in)."""
    lo, hi = seconds.min(), seconds.max()
    if hi is None or hi >= _EARLIEST_PLAUSIBLE_SECONDS:
        return
    for alt in ("s", "ms", "us"):
        ratio = _US_PER[alt] / _US_PER[unit]
        if ratio > 1 and lo * ratio >= _EARLIEST_PLAUSIBLE_SECONDS and hi * ratio < time.time():
            todo = (
                f"set {unit_key}={alt}"
                if unit_key
                else f"this format stores {_UNIT_WORDS[unit]}: is it the right file? (convert the "
                f"column to {_UNIT_WORDS[unit]})"
            )
            raise DataError(
                f"{where.path}, column {column!r}: read as {_UNIT_WORDS[unit]}, every timestamp falls "
                f"between {_day(lo)} and {_day(hi)} (a span of {(hi - lo) / 86400:.2f} days); read as "
                f"{_UNIT_WORDS[alt]} they span {(hi - lo) * ratio / 86400:.1f} days, {_day(lo * ratio)} "
                f"to {_day(hi * ratio)}: the values are {_UNIT_WORDS[alt]}; {todo}"
            )


def _implausible_dates(out: pl.Series) -> list[tuple[pl.Series, str]]:
    """The rows of datetimes ``out`` that are no event times, with why: later than the present,
    or before 1973 in a log whose median event is later (a placeholder such as 0)."""
    micros = out.dt.epoch("us")
    now = time.time()
    future = (micros > (now + _FUTURE_MARGIN_SECONDS) * 1e6).fill_null(False)
    found = [(future, f"is in the future (today is {_day(now)})")] if future.any() else []
    early = (micros < _EARLIEST_PLAUSIBLE_SECONDS * 1e6).fill_null(False)
    if early.any():
        median = micros.filter(~future).median()
        if median is not None and median >= _EARLIEST_PLAUSIBLE_SECONDS * 1e6:
            why = f"is long before the other events (median {_day(median / 1e6)}): a placeholder?"
            found.append((early, why))
    return found


def check_ids(
    s: pl.Series, where: Where, column: str, label: str, *, integer: bool = False
) -> pl.Series:
    """Validate an id column: no null, NaN or blank values; ``integer`` demands integer ids.

    Integral float ids (a pandas artefact) become Int64; other ids are kept as read.
    """
    dtype = s.dtype
    blank = s.is_null()
    if dtype.is_float():
        blank = blank | s.is_nan()
    elif dtype == pl.String:
        stripped = s.str.strip_chars()
        blank = blank | (stripped == "") | (stripped.str.to_lowercase() == "nan")
    row = first_row(blank)
    if row is not None:
        value = s[row]
        shown = (
            "empty"
            if value is None or (isinstance(value, str) and not value.strip())
            else short(value)
        )
        raise DataError(
            f"{where.at(row, column)}: {label} is {shown}; every row needs a {label}: fix or remove that row"
        )
    if dtype.is_float():
        if (s == s.round()).all():
            return s.cast(pl.Int64)
        if integer:
            row = first_row(s != s.round())
            raise DataError(
                f"{where.at(row, column)}: {label} {short(s[row])} is not an integer; fix that row"
            )
    if integer and dtype == pl.String:
        ints = s.str.strip_chars().cast(pl.Int64, strict=False)
        row = first_row(ints.is_null())
        if row is not None:
            raise DataError(
                f"{where.at(row, column)}: {label} {short(s[row])} is not an integer (this format has integer ids); "
                "fix that row or check the file format"
            )
        return ints
    return s


def to_float(s: pl.Series, where: Where, column: str, label: str) -> pl.Series:
    """Float64 column; unparsable text raises with the row and value (nulls stay null)."""
    if s.dtype.is_numeric():
        return s.cast(pl.Float64)
    if s.dtype == pl.Boolean:
        return s.cast(pl.Float64)
    text = s.cast(pl.String).str.strip_chars()
    out = text.cast(pl.Float64, strict=False)
    row = first_row(out.is_null() & text.is_not_null() & (text != ""))
    if row is not None:
        raise DataError(
            f"{where.at(row, column)}: {label} {short(s[row])} is not a number; fix or remove that row"
        )
    return out


def _infer_unit(values: pl.Series, where: Where, column: str, unit_key: str | None) -> str:
    lo, hi = values.min(), values.max()
    if lo is None:
        return "s"
    if lo >= 1e8 and hi < 1e11:
        return "s"
    if lo >= 1e11 and hi < 1e14:
        return "ms"
    if lo >= 1e14 and hi < 1e17:
        return "us"
    if lo >= 1e17:
        return "ns"
    todo = f"set {unit_key}=s or {unit_key}=ms" if unit_key else "set the timestamp unit (s or ms)"
    raise DataError(
        f"{where.path}, column {column!r}: cannot tell the unit of the numeric timestamps "
        f"(min {lo:g}, max {hi:g}: could be seconds or milliseconds since 1970); {todo}"
    )


def _iso_parse(text: pl.Series, fmt: str | None) -> pl.Series:
    """Parse date/time strings to Datetime(us, UTC); unparsable values become null."""

    def to_utc(parsed: pl.Series) -> pl.Series:
        if isinstance(parsed.dtype, pl.Datetime) and parsed.dtype.time_zone is not None:
            return parsed.dt.convert_time_zone("UTC").cast(UTC_US)
        return parsed.dt.replace_time_zone("UTC").cast(UTC_US)

    def attempt(f: str | None) -> pl.Series | None:
        try:
            return to_utc(text.str.to_datetime(f, strict=False, time_unit="us"))
        except pl.exceptions.PolarsError:
            return None

    if fmt:
        out = attempt(fmt)
        return out if out is not None else pl.Series(text.name, [None] * len(text), dtype=UTC_US)
    out = attempt(None)
    if out is None:
        out = pl.Series(text.name, [None] * len(text), dtype=UTC_US)
    # Mixed layouts (dates next to date-times, with or without an offset): fill in the gaps.
    for f in (
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%z",
        "%Y-%m-%d %H:%M:%S%z",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d",
    ):
        missing = out.is_null() & text.is_not_null()
        if not missing.any():
            break
        more = attempt(f)
        if more is not None:
            out = out.fill_null(more)
    return out


def to_datetime(
    s: pl.Series,
    where: Where,
    column: str,
    unit: str,
    *,
    unit_key: str | None = None,
    fmt: str | None = None,
    on_invalid: str = "error",
    drop_key: str | None = None,
) -> pl.Series:
    """Timestamps as Datetime(us, UTC).

    ``unit``: s / ms / us / ns (numbers since 1970; integer or float), iso (date-time strings,
    naive means UTC, offsets are converted), or auto (from the dtype and magnitude; an ambiguous
    range raises, naming ``unit_key``). Missing, unparsable, negative or implausible (after the
    year 5000) values raise with the row and value, or become null with ``on_invalid='drop'``.
    """
    drop = on_invalid == "drop"
    todo = "fix or remove that row" + (
        f", or set {drop_key}=drop to skip such rows" if drop_key else ""
    )

    def fail(row: int, problem: str) -> None:
        raise DataError(f"{where.at(row, column)}: {problem}; {todo}")

    dtype = s.dtype

    def checked_dates(out: pl.Series) -> pl.Series:
        """Dates before 1970 are placeholders (1900-01-01, 0001-01-01), not event times; nor
        are dates in the future, or long before the others (see :func:`_implausible_dates`)."""
        early = out < datetime(1970, 1, 1, tzinfo=timezone.utc)
        if not drop and (row := first_row(early)) is not None:
            fail(row, f"timestamp {short(s[row])} is before 1970 (a placeholder date?)")
        out = out.set(early.fill_null(False), None) if early.any() else out
        for bad, why in _implausible_dates(out):
            if not drop and (row := first_row(bad)) is not None:
                fail(row, f"timestamp {short(s[row])} ({out[row]:%Y-%m-%d %H:%M:%S}) {why}")
            out = out.set(bad, None)
        return out

    if isinstance(dtype, pl.Datetime):
        out = s.dt.convert_time_zone("UTC") if dtype.time_zone else s.dt.replace_time_zone("UTC")
        out = out.cast(UTC_US)
        row = first_row(out.is_null())
        if row is not None and not drop:
            fail(row, "missing timestamp")
        return checked_dates(out)
    if dtype == pl.Date:
        return checked_dates(s.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))

    if dtype in (pl.Categorical, pl.Enum) or isinstance(dtype, pl.Enum):
        s, dtype = s.cast(pl.String), pl.String
    numeric: pl.Series | None = None
    if dtype.is_numeric():
        numeric = s
    elif dtype == pl.String:
        text = s.str.strip_chars()
        if unit != "iso":
            as_int = text.cast(pl.Int64, strict=False)
            if (as_int.is_null() == text.is_null()).all():
                numeric = as_int
            else:
                as_float = text.cast(pl.Float64, strict=False)
                first_value = text.drop_nulls().head(1)
                looks_numeric = (
                    len(first_value) > 0 and as_float.filter(text.is_not_null())[0] is not None
                )
                if unit != "auto" or looks_numeric:
                    numeric = as_float
        if numeric is not None:
            bad = numeric.is_null() & text.is_not_null()
            if not drop and (row := first_row(bad)) is not None:
                expected = _UNIT_WORDS.get(unit, "a number like the other rows")
                fail(row, f"unparsable timestamp {short(s[row])} (expected {expected})")
    else:
        raise DataError(
            f"{where.path}, column {column!r}: timestamps of type {dtype} are not supported; "
            "use unix seconds, milliseconds or ISO date-time strings"
        )

    if numeric is None:
        text = s.cast(pl.String).str.strip_chars()
        out = _iso_parse(text, fmt)
        missing = out.is_null()
        if not drop and (row := first_row(missing)) is not None:
            if s[row] is None or not str(s[row]).strip():
                fail(row, "missing timestamp")
            shown = f"format {fmt!r}" if fmt else "an ISO date-time like 2024-01-31T12:00:00Z"
            fail(row, f"unparsable timestamp {short(s[row])} (expected {shown})")
        return checked_dates(out)

    if unit == "iso":
        raise DataError(
            f"{where.path}, column {column!r}: timestamp_unit is iso but the values are numbers "
            f"(e.g. {numeric.drop_nulls().head(1).to_list()}); set {unit_key or 'the unit'}=s or ms"
        )
    if numeric.dtype.is_float():
        bad_float = numeric.is_nan() | numeric.is_infinite()
        if not drop and (row := first_row(bad_float)) is not None:
            fail(row, f"invalid timestamp {short(s[row])}")
        numeric = pl.Series(numeric.name, numeric).set(bad_float.fill_null(False), None)
    if not drop:
        row = first_row(numeric.is_null())
        if row is not None:
            fail(row, "missing timestamp")
    negative = numeric < 0
    if not drop and (row := first_row(negative)) is not None:
        fail(row, f"negative timestamp {short(s[row])} (before 1970)")
    valid = numeric.filter(~negative.fill_null(True))
    if unit == "auto":
        unit = _infer_unit(valid, where, column, unit_key)
    factor = _US_PER[unit]
    seconds = numeric.cast(pl.Float64) * (factor / 1e6)
    too_late = seconds > _MAX_PLAUSIBLE_SECONDS
    if not drop and (row := first_row(too_late)) is not None:
        todo_unit = (
            f"is the unit right? set {unit_key} (s or ms)"
            if unit_key
            else f"this format stores {_UNIT_WORDS[unit]}: is it the right file?"
        )
        raise DataError(
            f"{where.at(row, column)}: timestamp {short(s[row])} read as {_UNIT_WORDS[unit]} is after "
            f"the year 5000; {todo_unit}"
        )
    invalid = (negative | too_late).fill_null(True)
    _check_unit(seconds.filter(~invalid), unit, where, column, unit_key)
    if numeric.dtype.is_integer() and unit != "ns":
        micros = numeric.cast(pl.Int64) * int(factor)
    else:
        micros = (numeric.cast(pl.Float64) * factor).round().cast(pl.Int64)
    micros = micros.set(invalid, None) if invalid.any() else micros
    return checked_dates(pl.from_epoch(micros, "us").dt.replace_time_zone("UTC").rename(s.name))
