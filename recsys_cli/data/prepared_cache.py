"""The cache of prepared data on disk: its key, atomic writing, reading back, and clean-up.

The cache lives in ``<cache_dir>/<name>-<fingerprint>/`` where the fingerprint covers the input
files (path, size, mtime), the reader's settings, the preparation settings and the code version.
It is written to a temporary folder and renamed into place, so an interrupted preparation never
leaves a folder that a later run would take as valid. The temporary folders of killed
preparations are removed by the next preparation (their writer's process is gone), and a damaged
entry is discarded. Whether an entry is read or built (and what is logged about it) is decided by
:func:`recsys_cli.data.prepare.prepare`.

A folder holds ``arrays.npz`` (the CSR arrays; the context columns' codes as ``context_<i>``, in
the order of ``meta.json``'s ``context`` names), ``items.parquet`` (raw item ids and titles),
``item_fields.parquet`` (one text column per item field, rows in item index order; only when
there are fields), ``users.parquet`` and ``meta.json`` (vocabularies, the field and context column names, stats).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from recsys_cli import __version__
from recsys_cli.data.formats.base import DatasetReader
from recsys_cli.data.prepared_data import PreparationConfig, PreparedData
from recsys_cli.io import remove_dead_leftovers, writer_tag

# Bump when the prepared layout or the preparation logic changes: invalidates every cache.
# 4: the items' text fields (item_fields.parquet). 5: read counts in the statistics (rows dropped
# for invalid timestamps), stricter timestamp checks. 6: context columns (data.columns.context).
PREPARE_VERSION = 6


def fingerprint(reader: DatasetReader, config: PreparationConfig) -> str:
    """Cache key: the reader's input files and settings, the preparation config, the code version."""
    h = hashlib.sha256()
    h.update(reader.fingerprint().encode())
    h.update(json.dumps(vars(config), sort_keys=True).encode())
    h.update(f"{PREPARE_VERSION}|{__version__}".encode())
    return h.hexdigest()[:16]


_ARRAYS = ("offsets", "items", "times", "event_types", "categories")
_TMP_MARK = ".tmp-"


def save_prepared(data: PreparedData, folder: Path) -> None:
    """Write ``data`` into ``folder`` atomically: everything goes to a temporary sibling folder,
    ``meta.json`` last, and the folder is renamed into place only when complete, so an
    interrupted save leaves nothing that :func:`prepare` would load."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_tmp(folder.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}{_TMP_MARK}{writer_tag()}-", dir=folder.parent))
    try:
        context = {f"context_{i}": codes for i, codes in enumerate(data.context.values())}
        np.savez(tmp / "arrays.npz", **{k: getattr(data, k) for k in _ARRAYS}, **context)
        items_table = {"item_id": pl.Series(data.item_vocab)}
        if data.item_titles is not None:
            items_table["title"] = pl.Series(data.item_titles, dtype=pl.Utf8)
        pl.DataFrame(items_table).write_parquet(tmp / "items.parquet")
        if data.item_fields:
            fields = {k: pl.Series(k, v, dtype=pl.Utf8) for k, v in data.item_fields.items()}
            pl.DataFrame(fields).write_parquet(tmp / "item_fields.parquet")
        pl.DataFrame({"user_id": pl.Series(data.user_vocab)}).write_parquet(tmp / "users.parquet")
        meta = {
            "event_type_vocab": data.event_type_vocab,
            "category_vocab": data.category_vocab,
            "item_fields": list(data.item_fields),
            "context": list(data.context),
            "context_vocab": [data.context_vocab[name] for name in data.context],
            "has_time": data.has_time,
            "stats": data.stats,
            "fingerprint": data.fingerprint,
            "version": PREPARE_VERSION,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        if folder.exists():  # a concurrent run finished first: keep its (identical) result
            shutil.rmtree(tmp)
            return
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_dead_tmp(cache_dir: str | Path | None) -> None:
    """Remove the temporary folders in ``cache_dir`` that preparations left when they were killed
    (their process is gone; see :func:`recsys_cli.io.remove_dead_leftovers`); a preparation that
    is still running keeps its folder."""
    if cache_dir is not None and Path(cache_dir).is_dir():
        remove_dead_leftovers(cache_dir, f".*{_TMP_MARK}*")


def load_prepared(folder: Path, expected_fingerprint: str | None = None) -> PreparedData:
    """Read a cache folder written by :func:`save_prepared`; ValueError when it is incomplete,
    from another version or for another fingerprint."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("version") != PREPARE_VERSION:
        raise ValueError(f"cache version {meta.get('version')}, expected {PREPARE_VERSION}")
    if expected_fingerprint is not None and meta.get("fingerprint") != expected_fingerprint:
        raise ValueError(f"fingerprint {meta.get('fingerprint')}, expected {expected_fingerprint}")
    names = meta["context"]
    with np.load(folder / "arrays.npz") as arrays:
        loaded = {k: arrays[k] for k in _ARRAYS}
        context = {name: arrays[f"context_{i}"] for i, name in enumerate(names)}
    context_vocab = dict(zip(names, meta["context_vocab"], strict=True))
    items = pl.read_parquet(folder / "items.parquet")
    users = pl.read_parquet(folder / "users.parquet").get_column("user_id").to_list()
    n = len(loaded["items"])
    if int(loaded["offsets"][-1]) != n or len(loaded["offsets"]) != len(users) + 1:
        raise ValueError("arrays and vocabularies disagree")
    if any(len(loaded[k]) != n for k in ("times", "event_types", "categories")):
        raise ValueError("event arrays of different lengths")
    for name, codes in context.items():
        if len(codes) != n or (n and int(codes.max()) > len(context_vocab[name])):
            raise ValueError(f"context column {name!r} and the events disagree")
    fields: dict[str, list[str | None]] = {}
    if meta["item_fields"]:
        table = pl.read_parquet(folder / "item_fields.parquet")
        fields = {k: table.get_column(k).to_list() for k in meta["item_fields"]}
        if table.height != items.height:
            raise ValueError("item fields and the item vocabulary disagree")
    return PreparedData(
        **loaded,
        item_vocab=items.get_column("item_id").to_list(),
        user_vocab=users,
        event_type_vocab=meta["event_type_vocab"],
        category_vocab=meta["category_vocab"],
        has_time=meta["has_time"],
        item_titles=items.get_column("title").to_list() if "title" in items.columns else None,
        item_fields=fields,
        context=context,
        context_vocab=context_vocab,
        stats=meta["stats"],
        fingerprint=meta["fingerprint"],
    )


def discard_damaged(folder: Path) -> None:
    """Move a damaged cache folder aside (atomically) and delete it."""
    trash = folder.with_name(f".{folder.name}{_TMP_MARK}damaged-{writer_tag()}-{os.urandom(4).hex()}")
    try:
        os.replace(folder, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)
