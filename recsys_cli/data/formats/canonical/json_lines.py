"""JSON lines files (plain or gzip): parsed in bounded chunks; the keys of the first record.

A chunk polars cannot parse is scanned line by line to name the line at fault: invalid JSON,
a record that is not an object, a field of the wrong type, or text that is not UTF-8.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import polars as pl

from recsys_cli.data.formats.canonical.files import (
    check_text,
    gzip_error,
    open_binary,
    require_file,
)
from recsys_cli.data.formats.canonical.messages import Where, one_line, short
from recsys_cli.errors import DataError

# Bytes of JSON lines parsed at once (bounded memory for multi-GB review dumps).
NDJSON_CHUNK_BYTES = 64 * 1024 * 1024


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
                    f"{path} line {line}: field {key!r} is {short(value)} ({type(value).__name__}), "
                    f"expected {dtype}; fix or remove that line"
                )
    last = first + chunk.count(b"\n")
    return DataError(
        f"{path} lines {first}-{last}: cannot parse the JSON lines ({one_line(exc)}); check the file"
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
    _check_json_text(p, encoding)
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
        raise gzip_error(p, exc) from None


def _check_json_text(path: Path, encoding: str) -> None:
    """JSON lines are split at newline bytes: text in a wide encoding (UTF-16, UTF-32) must be
    converted to UTF-8 whatever the encoding setting says (see :func:`check_text`)."""
    wide = encoding.replace("_", "-").startswith(("utf-16", "utf-32"))
    check_text(path, "utf-8" if wide else encoding, encoding_key=None)


def peek_json_keys(path: str | Path, what: str, encoding: str = "utf-8") -> set[str]:
    """The keys of the first JSON object in a JSON lines file."""
    p = require_file(path, what)
    _check_json_text(p, encoding)
    codec = "utf-8" if encoding in ("utf-8", "utf8-lossy") else encoding
    errors = "replace" if encoding == "utf8-lossy" else "strict"
    try:
        with open_binary(p) as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw.decode(codec, errors))
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
        raise gzip_error(p, exc) from None
    raise DataError(f"{p} has no JSON lines (only blank lines); expected {what}")
