"""The pieces of one-line error messages: what a value or list looks like, and where a row is.

Every reader's DataError names the file, the line (see :class:`Where`) and the offending value
(:func:`short`, :func:`fmt_list`), so that all formats fail the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

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


def fmt_list(names: Sequence[object], limit: int = 12) -> str:
    """The first ``limit`` names, each a bounded repr, comma-separated ('(none)' when empty)."""
    shown = [short(str(n), 40) for n in list(names)[:limit]]
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(shown) + more if shown else "(none)"


def short(value: object, limit: int = 60) -> str:
    """One-line, bounded repr of a value for a message."""
    text = repr(value)
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(exc: BaseException) -> str:
    """The first line of an exception's text (at most 200 characters), or its type name."""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def with_hint(hint: str) -> str:
    """'; hint' to end a message with, or '' when there is no hint."""
    return f"; {hint}" if hint else ""


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


def first_row(mask: pl.Series) -> int | None:
    """The 0-based row of the first true value of ``mask`` (nulls count as false), or None."""
    mask = mask.fill_null(False)
    return int(mask.arg_max()) if mask.any() else None
