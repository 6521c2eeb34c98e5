"""The contract every dataset reader fulfils.

A reader turns files in some on-disk format into the canonical tables:

events (polars.DataFrame), one row per interaction, in file order:
    user_id    any hashable raw id (kept as read: int or str)
    item_id    any hashable raw id
    timestamp  pl.Datetime("us", "UTC"), or the column is absent for datasets without time
               (the benchmark text files); then the order in the file is the time order
    event_type optional pl.Utf8 (view / cart / buy / ...)
    category   optional pl.Utf8 (one category per event, e.g. the item's category)
    rating     optional pl.Float64
    <name>     pl.Utf8 for every context column the config names (``data.columns.context``:
               name -> file column; tabular and recbole), null where missing; the names are
               listed in ``RawDataset.context`` and become ``PreparedData.context``
    any other columns are kept as read (preparation ignores them)

items (polars.DataFrame or None):
    item_id      same raw id type as in events
    title        optional pl.Utf8 (item text)
    category     optional pl.Utf8
    genres       optional pl.Utf8, several values ``|``-joined ("Animation|Children's|Comedy")
    year         optional pl.Utf8, a four-digit year ("1995")
    brand        optional pl.Utf8
    description  optional pl.Utf8
    any other columns are kept as read

    The text columns (``ITEM_TEXT_COLUMNS`` in ``canonical/assemble.py``) become the prepared
    data's ``item_fields``: a reader gives those its format has, null where an item has none,
    and leaves out a column it never has. Which reader gives which: recbole (title, category,
    genres, year, brand, description as the .item file has them), movielens (title, year,
    category, genres), amazon with metadata (title, category, brand, description), tabular with
    an items file (the columns mapped or so named), synthetic (title, category); taobao has
    categories on its events only (preparation makes them the items' category), retailrocket and
    sequence_text nothing.

users (polars.DataFrame or None): user features where a format has them (RecBole ``.user``)
    user_id    same raw id type as in events; other columns as read

Readers only read: they never write next to or modify the raw files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl


@dataclass
class RawDataset:
    """Canonical tables read from one source, plus the files they came from."""

    events: pl.DataFrame
    items: pl.DataFrame | None = None
    source_files: list[Path] = field(default_factory=list)
    name: str = "dataset"
    users: pl.DataFrame | None = None
    # what reading left out, counted (e.g. rows with invalid timestamps dropped); preparation
    # puts these counts into its statistics
    read_stats: dict[str, int] = field(default_factory=dict)
    # the names of the context columns of ``events`` (``data.columns.context``), in config order
    context: tuple[str, ...] = ()

    @property
    def has_time(self) -> bool:
        return "timestamp" in self.events.columns


class DatasetReader:
    """Base class of all readers: subclasses implement :meth:`read`.

    ``fingerprint`` identifies the input for the preparation cache: by default the
    path, size and modification time of every source file plus the reader's own settings.
    """

    name: str = "dataset"

    def read(self) -> RawDataset:  # pragma: no cover - interface
        raise NotImplementedError

    def source_files(self) -> list[Path]:
        """The files :meth:`read` would open (used for the cache fingerprint)."""
        return []

    def settings(self) -> dict:
        """The reader's settings that change what it returns (used for the cache fingerprint)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def fingerprint(self) -> str:
        """Identity of the input: reader type and settings, and per source file its resolved
        path, size, modification time and a hash of its first and last MiB (so a file rewritten
        with the same size and a restored mtime still gets a new fingerprint)."""
        h = hashlib.sha256()
        h.update(type(self).__qualname__.encode())
        h.update(repr(sorted((k, repr(v)) for k, v in self.settings().items())).encode())
        for path in self.source_files():
            p = Path(path)
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|".encode())
            h.update(_head_tail_digest(p, st.st_size))
        return h.hexdigest()[:16]


_EDGE_BYTES = 1 << 20


def _head_tail_digest(path: Path, size: int) -> bytes:
    """sha256 of the first and last MiB of a file (the whole file when it is under 2 MiB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_EDGE_BYTES))
        if size > _EDGE_BYTES:
            f.seek(max(size - _EDGE_BYTES, _EDGE_BYTES))
            h.update(f.read(_EDGE_BYTES))
    return h.digest()
