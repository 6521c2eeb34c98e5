"""File access: folders and files that must exist, the data file inside ``data.path``,
gzip-transparent reading, what a text file really is (:func:`check_text`), and UTF-8 diagnostics.

Every failure is a one-line DataError saying which path is wrong, what should be there and
what to do.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from recsys_cli.data.formats.canonical.messages import fmt_list, one_line, with_hint
from recsys_cli.data.formats.canonical.sniff import SNIFF_BYTES, reads, sniff
from recsys_cli.errors import DataError

ENCODING_KEY = "data.reader.encoding"


def require_dir(path: str | Path, expected: str, hint: str = "") -> Path:
    """The folder ``path``; DataError naming it and what should be inside when it is missing."""
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"folder not found: {p}; expected {expected} there{with_hint(hint)} (set data.path to the folder)"
        )
    if not p.is_dir():
        raise DataError(
            f"{p} is a file, not a folder; expected a folder with {expected}{with_hint(hint)}"
        )
    return p


def require_file(path: str | Path, expected: str, hint: str = "") -> Path:
    """The non-empty file ``path``; DataError saying what it should be when it is missing or empty."""
    p = Path(path)
    if not p.exists():
        parent = p.parent
        where = (
            f" ({parent} holds: {fmt_list(sorted(c.name for c in parent.iterdir()))})"
            if parent.is_dir()
            else f" (the folder {parent} does not exist either)"
        )
        raise DataError(f"file not found: {p}{where}; expected {expected} there{with_hint(hint)}")
    if p.is_dir():
        raise DataError(f"{p} is a folder; expected the file {expected}{with_hint(hint)}")
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


def locate_file(
    path: str | Path,
    what: str | Callable[[Path], str],
    hint: str = "",
    *,
    names: Sequence[str] = (),
    pattern: str | None = None,
    keep: Callable[[Path], bool] | None = None,
    ambiguous: str | None = None,
    file_suffixes: Sequence[str] | None = None,
    folder_hint: str | None = None,
) -> Path:
    """The data file ``path`` names: the file itself, or the one file inside the folder ``path``.

    In a folder (when ``names`` or ``pattern`` is given) the file is the first of ``names``
    present, else the only entry matching the glob ``pattern`` (and ``keep``). When ``pattern``
    matches none or several: DataError with ``ambiguous`` formatted with ``{folder}`` and
    ``{found}`` (the matching names) when given; otherwise the file-not-found message for the
    first of ``names`` (so a ``pattern`` without ``names`` needs ``ambiguous``).

    A missing path is reported as a missing folder when its suffix is not one of
    ``file_suffixes`` (lower case); without ``file_suffixes`` it is taken for a file, and a missing parent
    folder is reported as such (with ``folder_hint``, default ``hint``). The file found must be
    a readable, non-empty, non-archive file (:func:`require_file`); ``what`` says what it should
    be, or builds that text from the file's path.
    """
    p = Path(path)
    describe = what if callable(what) else lambda _: what
    if p.is_dir() and (names or pattern):
        for name in names:
            if (p / name).is_file():
                return require_file(p / name, describe(p / name), hint)
        if pattern:
            found = [f for f in sorted(p.glob(pattern)) if keep is None or keep(f)]
            if len(found) == 1:
                return require_file(found[0], describe(found[0]), hint)
            if ambiguous is not None:
                names_found = fmt_list([f.name for f in found])
                raise DataError(ambiguous.format(folder=p, found=names_found))
        return require_file(p / names[0], describe(p / names[0]), hint)
    if not p.exists():
        if file_suffixes is None:
            if not p.parent.is_dir():
                require_dir(p.parent, describe(p), hint if folder_hint is None else folder_hint)
        elif p.suffix.lower() not in file_suffixes:
            require_dir(p, describe(p), hint)
    return require_file(p, describe(p), hint)


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


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_binary(path: Path):
    """The file's bytes, gunzipped when it is a gzip file (detected by its magic bytes)."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def gzip_error(path: Path, exc: Exception) -> DataError:
    """DataError for a gzip file that cannot be decompressed (corrupt or cut short)."""
    return DataError(
        f"{path}: corrupt or truncated gzip file ({one_line(exc)}); re-download it or gunzip it and pass the plain file"
    )


def first_line(
    path: str | Path,
    encoding: str = "utf-8",
    max_bytes: int = 1 << 16,
    encoding_key: str | None = ENCODING_KEY,
) -> str:
    """The first line of the text file (decoded leniently; '' for an empty file); DataError when
    the file is not text in ``encoding`` (see :func:`check_text`)."""
    p = Path(path)
    check_text(p, encoding, encoding_key)
    try:
        with open_binary(p) as f:
            head = f.read(max_bytes)
    except (OSError, EOFError, zlib.error) as exc:
        raise gzip_error(p, exc) from None
    enc = "utf-8" if encoding in ("utf-8", "utf8-lossy") else encoding
    text = head.decode(enc, errors="replace").split("\n", 1)[0].rstrip("\r")
    return text.lstrip("\ufeff")


def check_text(
    path: str | Path, encoding: str = "utf-8", encoding_key: str | None = ENCODING_KEY
) -> None:
    """DataError naming what the file really is when its first bytes show that it is not text in
    ``encoding``: a binary format (Parquet, Excel, ... by the magic bytes), or UTF-16 / UTF-32
    text (by the byte-order mark or the NUL bytes) read with another encoding. Says which
    encoding to set (``encoding_key``), or how to convert the file when the format has no key."""
    p = Path(path)
    try:
        with open_binary(p) as f:
            head = f.read(SNIFF_BYTES)
        tail = b""
        if not is_gzip(p):
            with open(p, "rb") as f:
                f.seek(max(p.stat().st_size - 4, 0))
                tail = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise gzip_error(p, exc) from None
    found = sniff(head, tail)
    if found is None or reads(encoding, found):
        return
    what = f"{p}: {found.kind} ({found.evidence})"
    if found.codec is None:
        todo = "point data.path at the text file this format reads"
        if found.kind == "a Parquet file":
            rename = (
                f"data=tabular reads Parquet files by their name: rename it to {p.stem}.parquet"
            )
            todo = f"{rename}; or {todo}"
        raise DataError(f"{what}, not a text file; {todo}")
    name = found.codec.upper()
    todo = (
        f"set {encoding_key}={found.codec}"
        if encoding_key
        else f"this format is read as UTF-8: convert the file in place (e.g. iconv -f {name} -t UTF-8 "
        f"{p.name} > {p.name}.utf8 && mv {p.name}.utf8 {p.name})"
    )
    raise DataError(f"{what}, not {'UTF-8' if encoding == 'utf-8' else encoding}; {todo}")


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


def utf8_error(path: str | Path, encoding_key: str | None = ENCODING_KEY) -> DataError:
    """DataError for a file that is not valid UTF-8, naming the first bad byte and its line."""
    where = first_invalid_utf8(path)
    at = f" (byte 0x{where[1]:02x} on line {where[0]})" if where else ""
    todo = (
        f"set {encoding_key}=latin-1 (or the file's real encoding, e.g. cp1252)"
        if encoding_key
        else "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
    )
    return DataError(f"{path}: not valid UTF-8 text{at}; if it uses another encoding, {todo}")


def utf8_source(path: Path, encoding: str, encoding_key: str | None) -> Path | io.BytesIO:
    """What polars should read: the path itself for UTF-8, else the text re-encoded as UTF-8
    (a file that is not text in ``encoding`` raises, see :func:`check_text`)."""
    check_text(path, encoding, encoding_key)
    if encoding == "utf-8":
        return path
    errors = "replace" if encoding == "utf8-lossy" else "strict"
    codec = "utf-8" if encoding == "utf8-lossy" else encoding
    try:
        with open_binary(path) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise gzip_error(path, exc) from None
    try:
        text = raw.decode(codec, errors=errors)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}: cannot be decoded as {encoding} (byte 0x{raw[exc.start]:02x} on line {line}); "
            f"set {encoding_key or 'the encoding'} to the file's real encoding"
        ) from None
    return io.BytesIO(text.encode("utf-8"))
