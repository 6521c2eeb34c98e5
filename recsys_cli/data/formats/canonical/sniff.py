"""What the first bytes of a file say it really is: a binary format (by its magic bytes) or text
in a wide encoding (UTF-16 / UTF-32, by the byte-order mark or the pattern of NUL bytes).

:func:`sniff` only looks at bytes; :func:`~recsys_cli.data.formats.canonical.files.check_text`
reads them and turns a finding into a one-line DataError that names it.
"""

from __future__ import annotations

from dataclasses import dataclass

# How many bytes of a file are sniffed.
SNIFF_BYTES = 4096

# byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one)
_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 LE", "utf-32"),
    (b"\x00\x00\xfe\xff", "UTF-32 BE", "utf-32"),
    (b"\xff\xfe", "UTF-16 LE", "utf-16"),
    (b"\xfe\xff", "UTF-16 BE", "utf-16"),
)
# binary formats no text reader can read (compressed files and archives: files.require_file)
_MAGIC = {
    b"ARROW1": "an Arrow / Feather file",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1": "an Excel .xls (OLE2) file",
    b"SQLite format 3\x00": "an SQLite database",
    b"\x89HDF\r\n\x1a\n": "an HDF5 file",
    b"\x93NUMPY": "a NumPy .npy file",
    b"Obj\x01": "an Avro file",
}


@dataclass(frozen=True)
class Finding:
    """What a file is when it is not text that an ASCII-compatible encoding reads."""

    kind: str  # 'a Parquet file', 'UTF-16 LE text', ...
    evidence: str  # 'it starts with the byte-order mark ff fe'
    codec: str | None = None  # the encoding that reads it (text only): utf-16, utf-16-le, ...


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def _wide_without_bom(head: bytes) -> Finding | None:
    """UTF-16 text without a byte-order mark: ASCII characters leave every other byte NUL."""
    pairs = len(head) // 2
    if pairs < 8:
        return None
    even = sum(1 for b in head[0 : 2 * pairs : 2] if b == 0)
    odd = sum(1 for b in head[1 : 2 * pairs : 2] if b == 0)
    for zeros, other, order in ((odd, even, "le"), (even, odd, "be")):
        if zeros > 0.4 * pairs and other < 0.05 * pairs:
            side = "second" if order == "le" else "first"
            evidence = f"no byte-order mark, but the {side} byte of most characters is NUL"
            return Finding(f"UTF-16 {order.upper()} text", evidence, f"utf-16-{order}")
    return None


def sniff(head: bytes, tail: bytes = b"") -> Finding | None:
    """What ``head`` (the first bytes of a file; ``tail``: its last bytes, when known) shows the
    file to be when it is not ASCII-compatible text; None for text (UTF-8, Latin-1, ...)."""
    for bom, kind, codec in _BOMS:
        if head.startswith(bom):
            return Finding(f"{kind} text", f"it starts with the byte-order mark {_hex(bom)}", codec)
    if head.startswith(b"PAR1") and (not tail or tail.endswith(b"PAR1")):
        return Finding("a Parquet file", "it starts with the magic bytes PAR1")
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return Finding(kind, f"it starts with the magic bytes {magic[:8]!r}")
    if b"\x00" not in head:
        return None
    wide = _wide_without_bom(head)
    if wide is not None:
        return wide
    nuls = head.count(b"\x00")
    if nuls > 0.1 * len(head):
        return Finding("binary data", f"{nuls} of its first {len(head)} bytes are NUL")
    return None


def reads(encoding: str, finding: Finding) -> bool:
    """Whether the configured ``encoding`` (a normalised codec name) reads text of ``finding``."""
    if finding.codec is None:
        return False
    family = finding.codec[:6]  # utf-16 / utf-32
    return encoding.replace("_", "-").startswith(family)
