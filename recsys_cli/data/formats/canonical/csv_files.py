"""Delimited text files: :func:`read_csv` (typed fast path, string fallback for diagnostics)
and the header checks every tabular format shares.

A file polars cannot read is read again as text lines to name the exact line at fault: an
unclosed quote, a line with the wrong number of fields, a duplicated column name.
:func:`require_columns` also checks the columns of Parquet files.
"""

from __future__ import annotations

import difflib
import io
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import polars as pl

from recsys_cli.data.formats.canonical.files import (
    ENCODING_KEY,
    first_line,
    gzip_error,
    is_gzip,
    require_file,
    utf8_error,
    utf8_source,
)
from recsys_cli.data.formats.canonical.messages import (
    first_row,
    fmt_list,
    one_line,
    sep_name,
    short,
    with_hint,
)
from recsys_cli.errors import DataError


def require_columns(
    found: Sequence[str],
    required: Sequence[str],
    path: str | Path,
    *,
    separator: str | None = None,
    expected: Sequence[str] | None = None,
    hint: str = "",
    keys: Mapping[str, str] | None = None,
) -> None:
    """DataError when a required column is absent: names the file, the missing, expected and
    found columns, a close match for a misspelling, and a wrong-separator guess. ``keys`` gives
    the config key that named a column (``{'device_type': 'data.columns.context.device'}``),
    shown after it."""
    missing = [c for c in required if c not in found]
    if not missing:
        return
    expected = list(expected or required)
    named = fmt_list(missing)
    if keys and any(m in keys for m in missing):
        named = ", ".join(
            short(str(m), 40) + (f" ({keys[m]})" if m in keys else "") for m in missing
        )
    msg = f"{path}: missing column(s) {named}; expected columns {fmt_list(expected)}, found {fmt_list(found)}"
    if len(found) == 1 and len(expected) > 1 and separator is not None:
        guess = next(
            (s for s in (",", "\t", ";", "|", " ") if s != separator and s in found[0]), None
        )
        msg += (
            f"; wrong separator? the header was split on {sep_name(separator)} into a single column"
        )
        if guess is not None:
            msg += f" and contains {sep_name(guess)}: set the separator to {guess!r}"
        raise DataError(msg + with_hint(hint))
    close = []
    for m in missing:
        match = difflib.get_close_matches(m, [str(f) for f in found], n=1, cutoff=0.6)
        if match:
            close.append(f"{match[0]!r} for {m!r}")
    if close:
        msg += f" (did you mean {', '.join(close)}?)"
    raise DataError(msg + with_hint(hint))


def check_field_count(
    path: str | Path,
    separator: str,
    names: Sequence[str],
    *,
    encoding: str = "utf-8",
    encoding_key: str | None = ENCODING_KEY,
    fmt: str = "",
    hint: str = "",
) -> None:
    """Headerless files: the first line must have ``len(names)`` fields."""
    require_file(path, f"a {fmt} file" if fmt else f"a file with fields {', '.join(names)}", hint)
    line = first_line(path, encoding, encoding_key=encoding_key)
    n = len(line.split(separator))
    if n == len(names):
        return
    what = f"the {fmt} format has" if fmt else "expected"
    msg = (
        f"{path} line 1: {n} field(s) when split on {sep_name(separator)}, but {what} "
        f"{len(names)} ({', '.join(names)}): {short(line, 80)}"
    )
    if n == 1:
        guess = next((s for s in (",", "\t", ";", "|", " ") if s != separator and s in line), None)
        msg += "; wrong separator?"
        if guess is not None:
            msg += f" the line contains {sep_name(guess)}"
    raise DataError(msg + with_hint(hint or "check that data.path points to the right file"))


def read_lines(source: Path | io.BytesIO) -> pl.Series:
    """The lines of a UTF-8 text source as a String series (blank lines become null)."""
    df = pl.read_csv(
        source,
        has_header=False,
        separator="\x1f",
        quote_char=None,
        new_columns=["line"],
        schema={"line": pl.String},
        truncate_ragged_lines=True,
    )
    return df.get_column("line").str.strip_suffix("\r")


def _source_lines(source: Path | io.BytesIO) -> pl.Series | None:
    """The lines of a text source for diagnostics (None when even that fails)."""
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        return read_lines(source)
    except (pl.exceptions.PolarsError, OSError, EOFError):
        return None


def _ragged_line_error(
    source: Path | io.BytesIO, path: Path, separator: str, expected: int, quote_char: str | None
) -> DataError | None:
    lines = _source_lines(source)
    if lines is None:
        return None
    text = lines.fill_null("")
    if quote_char:
        q = "\\" + quote_char
        text = text.str.replace_all(f"{q}[^{q}]*{q}", "")
    counts = text.str.count_matches(separator, literal=True) + 1
    row = first_row((counts != expected) & lines.is_not_null())
    if row is None:
        return None
    return DataError(
        f"{path} line {row + 1}: {counts[row]} fields separated by {sep_name(separator)}, expected "
        f"{expected}: {short(lines[row], 80)}; fix or remove that line"
    )


def _unbalanced_quote_error(
    source: Path | io.BytesIO, path: Path, separator: str, expected: int, quote_char: str | None
) -> DataError | None:
    """The first line with an odd number of quote characters (a quoted field never closed)."""
    lines = _source_lines(source) if quote_char else None
    if lines is None:
        return None
    odd = (lines.fill_null("").str.count_matches(quote_char, literal=True) % 2) == 1
    row = first_row(odd)
    if row is None:
        return None
    return DataError(
        f"{path} line {row + 1}: unmatched {quote_char} (a quoted field is never closed): "
        f"{short(lines[row], 80)}; close or remove the quote on that line"
    )


_DUPLICATED = re.compile(r"^(.*)_duplicated_\d+$")


def _check_duplicate_header(header: Sequence[str], path: Path) -> None:
    """DataError when a column name appears twice (polars renames the copies ``*_duplicated_N``)."""
    for name in header:
        match = _DUPLICATED.match(name)
        if match and match.group(1) in header:
            raise DataError(
                f"{path} line 1: column {match.group(1)!r} appears more than once in the header; "
                "rename or remove the extra column"
            )


def read_csv(
    path: str | Path,
    *,
    separator: str = ",",
    has_header: bool = True,
    names: Sequence[str] | None = None,
    dtypes: Mapping[str, pl.DataType] | None = None,
    required: Sequence[str] | None = None,
    expected: Sequence[str] | None = None,
    encoding: str = "utf-8",
    encoding_key: str | None = ENCODING_KEY,
    quote_char: str | None = '"',
    what: str = "a CSV file",
    hint: str = "",
    diagnose: Callable[[], None] | None = None,
    keys: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Read a delimited text file into a frame, or raise a one-line DataError.

    ``names`` names the columns of a headerless file; ``dtypes`` gives column types (by name)
    for the fast path. When the typed read fails, the file is read again as text so the column
    converters can report the exact line and value; ``diagnose`` (if given) runs first and may
    raise a format-specific message. ``required`` columns are checked against the header
    (``keys``: the config keys that named some of them, see :func:`require_columns`).
    Files starting with the gzip magic bytes are decompressed.
    """
    p = require_file(path, what, hint)
    source = utf8_source(p, encoding, encoding_key)
    options: dict = {"separator": separator, "has_header": has_header, "quote_char": quote_char}
    if not has_header and names is not None:
        options["new_columns"] = list(names)

    def _read(**extra) -> pl.DataFrame:
        if isinstance(source, io.BytesIO):
            source.seek(0)
        try:
            return pl.read_csv(source, **options, **extra)
        except (OSError, EOFError) as exc:  # polars decompresses gzip itself: cut short?
            if is_gzip(p):
                raise gzip_error(p, exc) from None
            raise DataError(f"{p}: cannot read it ({one_line(exc)}){with_hint(hint)}") from None

    try:
        header = _read(n_rows=0).columns if has_header else list(names or [])
    except pl.exceptions.NoDataError:
        raise DataError(f"{p} is empty; expected {what}{with_hint(hint)}") from None
    except pl.exceptions.PolarsError as exc:
        if "utf-8" in str(exc).lower():
            raise utf8_error(p, encoding_key) from None
        raise DataError(
            f"{p}: cannot read it as {what} ({one_line(exc)}){with_hint(hint)}"
        ) from None
    if has_header:
        _check_duplicate_header(header, p)
    if required is not None:
        require_columns(
            header,
            required,
            p,
            separator=separator,
            expected=expected or required,
            hint=hint,
            keys=keys,
        )
    overrides = {k: v for k, v in (dtypes or {}).items() if k in header}
    try:
        if not has_header and names is not None and dtypes is not None:
            df = _read(schema={n: dtypes.get(n, pl.String) for n in names})
        else:
            df = _read(schema_overrides=overrides or None, infer_schema_length=10_000)
    except pl.exceptions.NoDataError:
        raise DataError(f"{p} is empty; expected {what}{with_hint(hint)}") from None
    except pl.exceptions.PolarsError as exc:
        if "utf-8" in str(exc).lower():
            raise utf8_error(p, encoding_key) from None
        if diagnose is not None:
            diagnose()
        try:
            df = _read(infer_schema=False)
        except pl.exceptions.PolarsError as exc2:
            if "utf-8" in str(exc2).lower():
                raise utf8_error(p, encoding_key) from None
            for check in (_unbalanced_quote_error, _ragged_line_error):
                found = check(source, p, separator, len(header), quote_char)
                if found is not None:
                    raise found from None
            raise DataError(
                f"{p}: cannot read it as {what} ({one_line(exc2)}){with_hint(hint)}"
            ) from None
    if df.height == 0:
        detail = "has a header but no data rows" if has_header else "has no data rows"
        raise DataError(f"{p} {detail}; expected {what}{with_hint(hint)}")
    return df
