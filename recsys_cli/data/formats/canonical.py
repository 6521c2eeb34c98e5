"""Shared file access, validation and canonicalisation for every dataset reader.

Every reader goes through these helpers, so that all formats fail the same way: a
:class:`~recsys_cli.errors.DataError` whose message is one line saying what is wrong, where
(file, line, column) and what to do. No raw polars traceback ever reaches the user.

Row numbers in messages are 1-based line numbers in the file, counting the header line.

The pieces:

* file access: :func:`require_dir`, :func:`require_file`, :func:`first_line`,
  :func:`read_csv` (typed fast path, string fallback for diagnostics), :func:`read_lines`,
  :func:`iter_ndjson` (chunked JSON lines, plain or gzip);
* checks: :func:`require_columns`, :func:`check_field_count`;
* column conversion: :func:`check_ids`, :func:`to_float`, :func:`to_datetime`;
* assembly: :func:`build_events`, :func:`build_items`, :func:`attach_item_category`.
"""

from __future__ import annotations

import codecs
import difflib
import gzip
import io
import json
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from recsys_cli.errors import ConfigError, DataError

log = logging.getLogger(__name__)

UTC_US = pl.Datetime("us", "UTC")
CANONICAL_EVENT_COLUMNS = ("user_id", "item_id", "timestamp", "event_type", "category", "rating")
CANONICAL_ITEM_COLUMNS = ("item_id", "title", "category")
TIME_UNITS = ("auto", "s", "ms", "us", "ns", "iso")
INVALID_TIMESTAMPS = ("error", "drop")

# Bytes of JSON lines parsed at once (bounded memory for multi-GB review dumps).
NDJSON_CHUNK_BYTES = 64 * 1024 * 1024

_US_PER = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
_UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
# Epoch seconds above this are after the year 5000: the unit must be wrong.
_MAX_PLAUSIBLE_SECONDS = 1e11
_SEPARATOR_NAMES = {
    ",": "comma ','",
    "\t": "tab '\\t'",
    ";": "semicolon ';'",
    "|": "pipe '|'",
    " ": "space ' '",
    ":": "colon ':'",
}


def sep_name(separator: str) -> str:
    """A readable name for a separator (tabs and spaces are invisible in messages)."""
    return _SEPARATOR_NAMES.get(separator, repr(separator))


def _fmt_list(names: Sequence[object], limit: int = 12) -> str:
    shown = [_short(str(n), 40) for n in list(names)[:limit]]
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(shown) + more if shown else "(none)"


def _short(value: object, limit: int = 60) -> str:
    """One-line, bounded repr of a value for a message."""
    text = repr(value)
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# config values
# --------------------------------------------------------------------------------------------


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
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}; set one of those")
    return value


# --------------------------------------------------------------------------------------------
# files and folders
# --------------------------------------------------------------------------------------------


def require_dir(path: str | Path, expected: str, hint: str = "") -> Path:
    """The folder ``path``; DataError naming it and what should be inside when it is missing."""
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"folder not found: {p}; expected {expected} there{_sep(hint)} (set data.path to the folder)"
        )
    if not p.is_dir():
        raise DataError(
            f"{p} is a file, not a folder; expected a folder with {expected}{_sep(hint)}"
        )
    return p


def require_file(path: str | Path, expected: str, hint: str = "") -> Path:
    """The non-empty file ``path``; DataError saying what it should be when it is missing or empty."""
    p = Path(path)
    if not p.exists():
        parent = p.parent
        where = (
            f" ({parent} holds: {_fmt_list(sorted(c.name for c in parent.iterdir()))})"
            if parent.is_dir()
            else f" (the folder {parent} does not exist either)"
        )
        raise DataError(f"file not found: {p}{where}; expected {expected} there{_sep(hint)}")
    if p.is_dir():
        raise DataError(f"{p} is a folder; expected the file {expected}{_sep(hint)}")
    if p.stat().st_size == 0:
        raise DataError(f"{p} is empty (0 bytes); expected {expected}; re-download or re-export it")
    if not os.access(p, os.R_OK):
        raise DataError(f"{p} is not readable (permission denied); fix its permissions (chmod +r)")
    archive = _archive_kind(p)
    if archive is not None:
        raise DataError(
            f"{p} is a {archive}, not {expected}; extract it first and point data.path at the "
            "extracted file or folder (gzip is read directly, other archives are not)"
        )
    return p


_ARCHIVE_MAGIC = {
    b"PK\x03\x04": "zip archive",
    b"PK\x05\x06": "zip archive (empty)",
    b"BZh": "bzip2 file",
    b"\xfd7zXZ\x00": "xz file",
    b"7z\xbc\xaf\x27\x1c": "7-Zip archive",
    b"Rar!\x1a\x07": "RAR archive",
}


def _archive_kind(path: Path) -> str | None:
    """The kind of archive ``path`` is (by its magic bytes), or None."""
    with open(path, "rb") as f:
        head = f.read(262)
    if head[257:262] == b"ustar":
        return "tar archive"
    return next((kind for magic, kind in _ARCHIVE_MAGIC.items() if head.startswith(magic)), None)


def _sep(hint: str) -> str:
    return f"; {hint}" if hint else ""


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_binary(path: Path):
    """The file's bytes, gunzipped when it is a gzip file (detected by its magic bytes)."""
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _gzip_error(path: Path, exc: Exception) -> DataError:
    return DataError(
        f"{path}: corrupt or truncated gzip file ({_one_line(exc)}); re-download it or gunzip it and pass the plain file"
    )


def first_line(path: str | Path, encoding: str = "utf-8", max_bytes: int = 1 << 16) -> str:
    """The first line of the file (decoded leniently; '' for an empty file)."""
    p = Path(path)
    try:
        with open_binary(p) as f:
            head = f.read(max_bytes)
    except (OSError, EOFError, zlib.error) as exc:
        raise _gzip_error(p, exc) from None
    head = head.split(b"\n", 1)[0].rstrip(b"\r")
    enc = "utf-8" if encoding in ("utf-8", "utf8-lossy") else encoding
    text = head.decode(enc, errors="replace")
    return text.lstrip("\ufeff")


def first_invalid_utf8(path: str | Path) -> tuple[int, int] | None:
    """(1-based line, byte value) of the first byte that is not valid UTF-8, or None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open_binary(Path(path)) as f:
        while block := f.read(1 << 22):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return line + block.count(b"\n", 0, exc.start), block[exc.start]
            line += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return line, 0
    return None


def utf8_error(path: str | Path, encoding_key: str | None = "data.reader.encoding") -> DataError:
    """DataError for a file that is not valid UTF-8, naming the first bad byte and its line."""
    where = first_invalid_utf8(path)
    at = f" (byte 0x{where[1]:02x} on line {where[0]})" if where else ""
    todo = (
        f"set {encoding_key}=latin-1 (or the file's real encoding, e.g. cp1252)"
        if encoding_key
        else "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
    )
    return DataError(f"{path}: not valid UTF-8 text{at}; if it uses another encoding, {todo}")


def _text_source(path: Path, encoding: str, encoding_key: str | None) -> Path | io.BytesIO:
    """What polars should read: the path itself for UTF-8, else the text re-encoded as UTF-8."""
    if encoding == "utf-8":
        return path
    errors = "replace" if encoding == "utf8-lossy" else "strict"
    codec = "utf-8" if encoding == "utf8-lossy" else encoding
    try:
        with open_binary(path) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise _gzip_error(path, exc) from None
    try:
        text = raw.decode(codec, errors=errors)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}: cannot be decoded as {encoding} (byte 0x{raw[exc.start]:02x} on line {line}); "
            f"set {encoding_key or 'the encoding'} to the file's real encoding"
        ) from None
    return io.BytesIO(text.encode("utf-8"))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# locations for messages
# --------------------------------------------------------------------------------------------


@dataclass
class Where:
    """Maps a 0-based row of a frame to the 1-based line number in ``path``."""

    path: Path | str
    first_line: int = 2  # the line of row 0 (2 for a file with a header line)
    line_of: Callable[[int], int] | None = None
    kind: str = "line"  # 'row' for files without lines (Parquet)

    def line(self, row: int) -> int:
        return self.line_of(row) if self.line_of is not None else self.first_line + row

    def at(self, row: int, column: str | None = None) -> str:
        col = f", column {column!r}" if column else ""
        return f"{self.path} {self.kind} {self.line(row)}{col}"


def _first(mask: pl.Series) -> int | None:
    mask = mask.fill_null(False)
    return int(mask.arg_max()) if mask.any() else None


# --------------------------------------------------------------------------------------------
# CSV / text
# --------------------------------------------------------------------------------------------


def require_columns(
    found: Sequence[str],
    required: Sequence[str],
    path: str | Path,
    *,
    separator: str | None = None,
    expected: Sequence[str] | None = None,
    hint: str = "",
) -> None:
    """DataError when a required column is absent: names the file, the missing, expected and
    found columns, a close match for a misspelling, and a wrong-separator guess."""
    missing = [c for c in required if c not in found]
    if not missing:
        return
    expected = list(expected or required)
    msg = f"{path}: missing column(s) {_fmt_list(missing)}; expected columns {_fmt_list(expected)}, found {_fmt_list(found)}"
    if len(found) == 1 and len(expected) > 1 and separator is not None:
        guess = next(
            (s for s in (",", "\t", ";", "|", " ") if s != separator and s in found[0]), None
        )
        msg += (
            f"; wrong separator? the header was split on {sep_name(separator)} into a single column"
        )
        if guess is not None:
            msg += f" and contains {sep_name(guess)}: set the separator to {guess!r}"
        raise DataError(msg + _sep(hint))
    close = []
    for m in missing:
        match = difflib.get_close_matches(m, [str(f) for f in found], n=1, cutoff=0.6)
        if match:
            close.append(f"{match[0]!r} for {m!r}")
    if close:
        msg += f" (did you mean {', '.join(close)}?)"
    raise DataError(msg + _sep(hint))


def check_field_count(
    path: str | Path,
    separator: str,
    names: Sequence[str],
    *,
    encoding: str = "utf-8",
    fmt: str = "",
    hint: str = "",
) -> None:
    """Headerless files: the first line must have ``len(names)`` fields."""
    require_file(path, f"a {fmt} file" if fmt else f"a file with fields {', '.join(names)}", hint)
    line = first_line(path, encoding)
    n = len(line.split(separator))
    if n == len(names):
        return
    what = f"the {fmt} format has" if fmt else "expected"
    msg = (
        f"{path} line 1: {n} field(s) when split on {sep_name(separator)}, but {what} "
        f"{len(names)} ({', '.join(names)}): {_short(line, 80)}"
    )
    if n == 1:
        guess = next((s for s in (",", "\t", ";", "|", " ") if s != separator and s in line), None)
        msg += "; wrong separator?"
        if guess is not None:
            msg += f" the line contains {sep_name(guess)}"
    raise DataError(msg + _sep(hint or "check that data.path points to the right file"))


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
    except pl.exceptions.PolarsError:
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
    row = _first((counts != expected) & lines.is_not_null())
    if row is None:
        return None
    return DataError(
        f"{path} line {row + 1}: {counts[row]} fields separated by {sep_name(separator)}, expected "
        f"{expected}: {_short(lines[row], 80)}; fix or remove that line"
    )


def _unbalanced_quote_error(
    source: Path | io.BytesIO, path: Path, separator: str, expected: int, quote_char: str | None
) -> DataError | None:
    """The first line with an odd number of quote characters (a quoted field never closed)."""
    lines = _source_lines(source) if quote_char else None
    if lines is None:
        return None
    odd = (lines.fill_null("").str.count_matches(quote_char, literal=True) % 2) == 1
    row = _first(odd)
    if row is None:
        return None
    return DataError(
        f"{path} line {row + 1}: unmatched {quote_char} (a quoted field is never closed): "
        f"{_short(lines[row], 80)}; close or remove the quote on that line"
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
    encoding_key: str | None = "data.reader.encoding",
    quote_char: str | None = '"',
    what: str = "a CSV file",
    hint: str = "",
    diagnose: Callable[[], None] | None = None,
) -> pl.DataFrame:
    """Read a delimited text file into a frame, or raise a one-line DataError.

    ``names`` names the columns of a headerless file; ``dtypes`` gives column types (by name)
    for the fast path. When the typed read fails, the file is read again as text so the column
    converters can report the exact line and value; ``diagnose`` (if given) runs first and may
    raise a format-specific message. ``required`` columns are checked against the header.
    Files starting with the gzip magic bytes are decompressed.
    """
    p = require_file(path, what, hint)
    source = _text_source(p, encoding, encoding_key)
    options: dict = {"separator": separator, "has_header": has_header, "quote_char": quote_char}
    if not has_header and names is not None:
        options["new_columns"] = list(names)

    def _read(**extra) -> pl.DataFrame:
        if isinstance(source, io.BytesIO):
            source.seek(0)
        return pl.read_csv(source, **options, **extra)

    try:
        header = _read(n_rows=0).columns if has_header else list(names or [])
    except pl.exceptions.NoDataError:
        raise DataError(f"{p} is empty; expected {what}{_sep(hint)}") from None
    except pl.exceptions.PolarsError as exc:
        if "utf-8" in str(exc).lower():
            raise utf8_error(p, encoding_key) from None
        raise DataError(f"{p}: cannot read it as {what} ({_one_line(exc)}){_sep(hint)}") from None
    if has_header:
        _check_duplicate_header(header, p)
    if required is not None:
        require_columns(
            header, required, p, separator=separator, expected=expected or required, hint=hint
        )
    overrides = {k: v for k, v in (dtypes or {}).items() if k in header}
    try:
        if not has_header and names is not None and dtypes is not None:
            df = _read(schema={n: dtypes.get(n, pl.String) for n in names})
        else:
            df = _read(schema_overrides=overrides or None, infer_schema_length=10_000)
    except pl.exceptions.NoDataError:
        raise DataError(f"{p} is empty; expected {what}{_sep(hint)}") from None
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
                f"{p}: cannot read it as {what} ({_one_line(exc2)}){_sep(hint)}"
            ) from None
    if df.height == 0:
        detail = "has a header but no data rows" if has_header else "has no data rows"
        raise DataError(f"{p} {detail}; expected {what}{_sep(hint)}")
    return df


# --------------------------------------------------------------------------------------------
# JSON lines
# --------------------------------------------------------------------------------------------


def _json_type_ok(value: object, dtype: pl.DataType) -> bool:
    if dtype == pl.String:
        return isinstance(value, str)
    if dtype.is_integer():
        return isinstance(value, int) and not isinstance(value, bool)
    if dtype.is_float():
        return isinstance(value, int | float) and not isinstance(value, bool)
    if dtype == pl.Boolean:
        return isinstance(value, bool)
    if isinstance(dtype, pl.List):
        return isinstance(value, list)
    return True


def _json_chunk_error(
    chunk: bytes, first: int, path: Path, schema: Mapping[str, pl.DataType], exc: Exception
) -> DataError:
    for i, raw in enumerate(chunk.split(b"\n")):
        if not raw.strip():
            continue
        line = first + i
        try:
            obj = json.loads(raw)
        except UnicodeDecodeError:
            return DataError(
                f"{path} line {line}: not valid UTF-8; JSON lines files must be UTF-8: re-encode it "
                "or set data.reader.encoding to its real encoding"
            )
        except json.JSONDecodeError as err:
            extra = ""
            if raw.lstrip().startswith(b"{'"):
                extra = (
                    " (Python dict syntax: the 2014 Amazon dump? use the 2018 or 2023 JSON files)"
                )
            return DataError(
                f"{path} line {line}: invalid JSON ({err.msg} at character {err.pos + 1}){extra}; "
                "fix or remove that line"
            )
        if not isinstance(obj, dict):
            return DataError(
                f"{path} line {line}: expected a JSON object per line, found {type(obj).__name__}; "
                "fix or remove that line"
            )
        for key, dtype in schema.items():
            value = obj.get(key)
            if value is not None and not _json_type_ok(value, dtype):
                return DataError(
                    f"{path} line {line}: field {key!r} is {_short(value)} ({type(value).__name__}), "
                    f"expected {dtype}; fix or remove that line"
                )
    last = first + chunk.count(b"\n")
    return DataError(
        f"{path} lines {first}-{last}: cannot parse the JSON lines ({_one_line(exc)}); check the file"
    )


def _line_mapper(chunk: bytes, first: int) -> Callable[[int], int]:
    """Row -> line for a chunk whose blank lines polars skipped (built only when needed)."""
    cache: list[int] = []

    def line_of(row: int) -> int:
        if not cache:
            cache.extend(i for i, raw in enumerate(chunk.split(b"\n")) if raw.strip())
        return first + (cache[row] if row < len(cache) else row)

    return line_of


def iter_ndjson(
    path: str | Path,
    schema: Mapping[str, pl.DataType],
    *,
    encoding: str = "utf-8",
    what: str = "a JSON lines file",
    chunk_bytes: int | None = None,
) -> Iterator[tuple[pl.DataFrame, Where]]:
    """Parse a JSON lines file (plain or gzip) in bounded chunks: yields (frame, where) pairs.

    Only the fields in ``schema`` are read (absent fields become null). Invalid JSON, a wrong
    field type or invalid UTF-8 raise DataError with the line number.
    """
    p = require_file(path, what)
    size = chunk_bytes or NDJSON_CHUNK_BYTES
    codec = None if encoding == "utf-8" else encoding
    line = 1
    carry = b""
    try:
        with open_binary(p) as f:
            while True:
                block = f.read(size)
                data = carry + block
                if block:
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        carry = data
                        continue
                    chunk, carry = data[: cut + 1], data[cut + 1 :]
                else:
                    chunk, carry = data, b""
                if chunk.strip():
                    parse = chunk
                    if codec is not None:
                        errors = "replace" if codec == "utf8-lossy" else "strict"
                        try:
                            text = chunk.decode(
                                "utf-8" if codec == "utf8-lossy" else codec, errors=errors
                            )
                        except UnicodeDecodeError as exc:
                            bad = line + chunk.count(b"\n", 0, exc.start)
                            raise DataError(
                                f"{p} line {bad}: cannot be decoded as {encoding}; set "
                                "data.reader.encoding to the file's real encoding"
                            ) from None
                        parse = text.encode("utf-8")
                    try:
                        df = pl.read_ndjson(io.BytesIO(parse), schema=dict(schema))
                    except pl.exceptions.PolarsError as exc:
                        raise _json_chunk_error(chunk, line, p, schema, exc) from None
                    yield df, Where(p, line_of=_line_mapper(chunk, line))
                line += chunk.count(b"\n")
                if not block:
                    break
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _gzip_error(p, exc) from None


def peek_json_keys(path: str | Path, what: str) -> set[str]:
    """The keys of the first JSON object in a JSON lines file."""
    p = require_file(path, what)
    try:
        with open_binary(p) as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except UnicodeDecodeError:
                    raise DataError(
                        f"{p} line {number}: not valid UTF-8; JSON lines files must be UTF-8"
                    ) from None
                except json.JSONDecodeError as err:
                    raise _json_chunk_error(raw, number, p, {}, err) from None
                if not isinstance(obj, dict):
                    raise DataError(
                        f"{p} line {number}: expected a JSON object per line, found {type(obj).__name__}; "
                        f"expected {what}"
                    )
                return set(obj)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _gzip_error(p, exc) from None
    raise DataError(f"{p} has no JSON lines (only blank lines); expected {what}")


# --------------------------------------------------------------------------------------------
# column conversion
# --------------------------------------------------------------------------------------------


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
    row = _first(blank)
    if row is not None:
        value = s[row]
        shown = (
            "empty"
            if value is None or (isinstance(value, str) and not value.strip())
            else _short(value)
        )
        raise DataError(
            f"{where.at(row, column)}: {label} is {shown}; every row needs a {label}: fix or remove that row"
        )
    if dtype.is_float():
        if (s == s.round()).all():
            return s.cast(pl.Int64)
        if integer:
            row = _first(s != s.round())
            raise DataError(
                f"{where.at(row, column)}: {label} {_short(s[row])} is not an integer; fix that row"
            )
    if integer and dtype == pl.String:
        ints = s.str.strip_chars().cast(pl.Int64, strict=False)
        row = _first(ints.is_null())
        if row is not None:
            raise DataError(
                f"{where.at(row, column)}: {label} {_short(s[row])} is not an integer (this format has integer ids); "
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
    row = _first(out.is_null() & text.is_not_null() & (text != ""))
    if row is not None:
        raise DataError(
            f"{where.at(row, column)}: {label} {_short(s[row])} is not a number; fix or remove that row"
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

    def before_1970(out: pl.Series) -> pl.Series:
        """Dates before 1970 are placeholders (1900-01-01, 0001-01-01), not event times."""
        early = out < datetime(1970, 1, 1, tzinfo=timezone.utc)
        if not drop and (row := _first(early)) is not None:
            fail(row, f"timestamp {_short(s[row])} is before 1970 (a placeholder date?)")
        return out.set(early.fill_null(False), None) if early.any() else out

    if isinstance(dtype, pl.Datetime):
        out = s.dt.convert_time_zone("UTC") if dtype.time_zone else s.dt.replace_time_zone("UTC")
        out = out.cast(UTC_US)
        row = _first(out.is_null())
        if row is not None and not drop:
            fail(row, "missing timestamp")
        return before_1970(out)
    if dtype == pl.Date:
        return before_1970(s.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))

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
            if not drop and (row := _first(bad)) is not None:
                expected = _UNIT_WORDS.get(unit, "a number like the other rows")
                fail(row, f"unparsable timestamp {_short(s[row])} (expected {expected})")
    else:
        raise DataError(
            f"{where.path}, column {column!r}: timestamps of type {dtype} are not supported; "
            "use unix seconds, milliseconds or ISO date-time strings"
        )

    if numeric is None:
        text = s.cast(pl.String).str.strip_chars()
        out = _iso_parse(text, fmt)
        missing = out.is_null()
        if not drop and (row := _first(missing)) is not None:
            if s[row] is None or not str(s[row]).strip():
                fail(row, "missing timestamp")
            shown = f"format {fmt!r}" if fmt else "an ISO date-time like 2024-01-31T12:00:00Z"
            fail(row, f"unparsable timestamp {_short(s[row])} (expected {shown})")
        return before_1970(out)

    if unit == "iso":
        raise DataError(
            f"{where.path}, column {column!r}: timestamp_unit is iso but the values are numbers "
            f"(e.g. {numeric.drop_nulls().head(1).to_list()}); set {unit_key or 'the unit'}=s or ms"
        )
    if numeric.dtype.is_float():
        bad_float = numeric.is_nan() | numeric.is_infinite()
        if not drop and (row := _first(bad_float)) is not None:
            fail(row, f"invalid timestamp {_short(s[row])}")
        numeric = pl.Series(numeric.name, numeric).set(bad_float.fill_null(False), None)
    if not drop:
        row = _first(numeric.is_null())
        if row is not None:
            fail(row, "missing timestamp")
    negative = numeric < 0
    if not drop and (row := _first(negative)) is not None:
        fail(row, f"negative timestamp {_short(s[row])} (before 1970)")
    valid = numeric.filter(~negative.fill_null(True))
    if unit == "auto":
        unit = _infer_unit(valid, where, column, unit_key)
    factor = _US_PER[unit]
    seconds = numeric.cast(pl.Float64) * (factor / 1e6)
    too_late = seconds > _MAX_PLAUSIBLE_SECONDS
    if not drop and (row := _first(too_late)) is not None:
        todo_unit = (
            f"is the unit right? set {unit_key} (s or ms)"
            if unit_key
            else f"this format stores {_UNIT_WORDS[unit]}: is it the right file?"
        )
        raise DataError(
            f"{where.at(row, column)}: timestamp {_short(s[row])} read as {_UNIT_WORDS[unit]} is after "
            f"the year 5000; {todo_unit}"
        )
    invalid = (negative | too_late).fill_null(True)
    if numeric.dtype.is_integer() and unit != "ns":
        micros = numeric.cast(pl.Int64) * int(factor)
    else:
        micros = (numeric.cast(pl.Float64) * factor).round().cast(pl.Int64)
    micros = micros.set(invalid, None) if invalid.any() else micros
    return pl.from_epoch(micros, "us").dt.replace_time_zone("UTC").rename(s.name)


# --------------------------------------------------------------------------------------------
# canonical frames
# --------------------------------------------------------------------------------------------


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
    integer_ids: bool = False,
    event_map: Mapping[str, str] | None = None,
    drop: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    unit_key: str | None = None,
    time_format: str | None = None,
    on_invalid: str = "error",
    drop_key: str | None = None,
    allow_empty: bool = False,
) -> pl.DataFrame:
    """The canonical events frame from ``df`` whose columns are named by the arguments.

    Other columns (not consumed and not in ``drop``) are kept as context; one whose name
    clashes with a canonical column gets the suffix ``_raw``.
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
    used = {user, item, timestamp, event_type, category, rating, *drop}
    frame = pl.DataFrame([s.rename(name) for name, s in out.items()])
    extras = []
    for name in df.columns:
        if name in used:
            continue
        target = f"{name}_raw" if name in CANONICAL_EVENT_COLUMNS else name
        extras.append(df.get_column(name).rename(target))
    if extras:
        frame = frame.hstack(extras)
    if timestamp is not None and on_invalid == "drop":
        keep = frame.get_column("timestamp").is_not_null()
        dropped = frame.height - int(keep.sum())
        if dropped:
            log.warning("%s: dropped %d rows with invalid timestamps", where.path, dropped)
            frame = frame.filter(keep)
    if frame.height == 0 and not allow_empty:
        raise DataError(f"{where.path}: no events left to read; check the file contents")
    return frame


def build_items(
    df: pl.DataFrame,
    where: Where,
    *,
    item: str,
    title: str | None = None,
    category: str | None = None,
    drop: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    integer_ids: bool = False,
) -> pl.DataFrame:
    """The canonical items frame (one row per item id, the first occurrence wins)."""
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
    used = {item, title, category, *drop}
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


def config_dict(value: object, key: str) -> dict:
    """A plain dict from a config mapping (Hydra passes DictConfig)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{key} must be a mapping like {{user: user_id, item: item_id}}, got {value!r}"
        )
    return {str(k): (None if v is None else str(v)) for k, v in value.items()}
