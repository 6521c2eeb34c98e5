"""Preparation: canonical events -> deduplicated, filtered, indexed, time-sorted arrays, cached.

The prepared form is a CSR layout over users: ``offsets[u]:offsets[u+1]`` are user ``u``'s
events in time order in the flat arrays ``items``, ``times``, ``event_types`` and ``categories``.
Ids are contiguous and 0 is reserved for padding (items, event types, categories). Batches are
gathered from these arrays by index arithmetic: no per-prefix copies of sequences exist anywhere.

The cache lives in ``<cache_dir>/<name>-<fingerprint>/`` where the fingerprint covers the input
files (path, size, mtime), the reader's settings, the preparation settings and the code version.
It is written to a temporary folder and renamed into place, so an interrupted preparation never
leaves a folder that a later run would take as valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recsys_cli import __version__
from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Bump when the prepared layout or the preparation logic changes: invalidates every cache.
PREPARE_VERSION = 1


@dataclass
class PreparationConfig:
    """How raw events become training data (``data.preparation`` in the config)."""

    dedup: bool = True
    min_user_events: int = 2
    min_item_events: int = 1
    max_events_per_user: int | None = None

    def __post_init__(self) -> None:
        if self.min_user_events < 2:
            raise ConfigError(
                f"data.preparation.min_user_events={self.min_user_events}: a user needs at least 2 "
                "events (one input, one target); use 2 or more"
            )
        if self.min_item_events < 1:
            raise ConfigError(
                f"data.preparation.min_item_events={self.min_item_events}: use 1 (no filter) or more"
            )
        if self.max_events_per_user is not None and self.max_events_per_user < 2:
            raise ConfigError(
                "data.preparation.max_events_per_user must be null (keep all) or at least 2"
            )


@dataclass
class PreparedData:
    """Indexed, sorted events in CSR layout plus vocabularies and statistics."""

    offsets: np.ndarray  # [U+1] int64
    items: np.ndarray  # [E] int64, 1..num_items
    times: np.ndarray  # [E] int64, unix seconds (or per-user position when has_time is False)
    event_types: np.ndarray  # [E] int64, 0 = unknown, 1..num_event_types
    categories: np.ndarray  # [E] int64, 0 = unknown
    item_vocab: list  # raw item id of item index i+1
    user_vocab: list  # raw user id of user index u
    event_type_vocab: list[str]  # name of event type index i+1
    category_vocab: list[str]  # name of category index i+1
    has_time: bool
    item_titles: list[str | None] | None = None
    stats: dict = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_items(self) -> int:
        return len(self.item_vocab)

    @property
    def num_events(self) -> int:
        return len(self.items)

    @property
    def num_event_types(self) -> int:
        return len(self.event_type_vocab)

    @property
    def num_categories(self) -> int:
        return len(self.category_vocab)

    @property
    def user_of_event(self) -> np.ndarray:
        """[E] user index of every event."""
        return np.repeat(np.arange(self.num_users), np.diff(self.offsets))


def _vocab_codes(column: pl.Series) -> tuple[np.ndarray, list]:
    """Map a column to contiguous codes 1..V (sorted by value, nulls -> 0) and its vocabulary."""
    vocab = column.drop_nulls().unique().sort()
    mapping = pl.DataFrame({"value": vocab, "code": pl.int_range(1, len(vocab) + 1, eager=True)})
    codes = (
        pl.DataFrame({"value": column})
        .join(mapping, on="value", how="left", maintain_order="left")
        .get_column("code")
        .fill_null(0)
        .to_numpy()
        .astype(np.int64)
    )
    return codes, vocab.to_list()


def _kcore(events: pl.DataFrame, min_user: int, min_item: int) -> tuple[pl.DataFrame, int]:
    """Iteratively drop users with < min_user events and items with < min_item events."""
    rounds = 0
    while True:
        rounds += 1
        before = events.height
        if min_item > 1:
            events = events.filter(pl.len().over("item_id") >= min_item)
        events = events.filter(pl.len().over("user_id") >= min_user)
        if events.height == before or events.height == 0:
            return events, rounds


def prepare_events(raw: RawDataset, config: PreparationConfig) -> PreparedData:
    """Deduplicate, filter, index and sort the canonical events (see the module docstring)."""
    events = raw.events
    if events.height == 0:
        raise DataError(f"dataset '{raw.name}' has no events; check data.path and the file contents")
    for col in ("user_id", "item_id"):
        if col not in events.columns:
            raise DataError(
                f"dataset '{raw.name}': the reader returned no '{col}' column "
                f"(columns: {events.columns})"
            )
    has_time = raw.has_time
    stats: dict = {"raw_events": events.height}

    if config.dedup:
        key = [c for c in ("user_id", "item_id", "timestamp", "event_type") if c in events.columns]
        deduped = events.unique(subset=key, keep="first", maintain_order=True)
        stats["duplicates_dropped"] = events.height - deduped.height
        events = deduped
    else:
        stats["duplicates_dropped"] = 0

    users_before = events.get_column("user_id").n_unique()
    items_before = events.get_column("item_id").n_unique()
    events, rounds = _kcore(events, config.min_user_events, config.min_item_events)
    if events.height == 0:
        raise DataError(
            f"dataset '{raw.name}': no events left after filtering users with fewer than "
            f"{config.min_user_events} events and items with fewer than {config.min_item_events}; "
            "lower data.preparation.min_user_events / min_item_events"
        )
    stats["filter_rounds"] = rounds
    stats["users_dropped"] = users_before - events.get_column("user_id").n_unique()
    stats["items_dropped"] = items_before - events.get_column("item_id").n_unique()

    # Stable sort: equal timestamps keep the file order (common in ML-1M).
    if has_time:
        events = events.sort(["user_id", "timestamp"], maintain_order=True)
    else:
        events = events.sort("user_id", maintain_order=True)
    if config.max_events_per_user is not None:
        events = events.filter(
            pl.int_range(pl.len()).reverse().over("user_id") < config.max_events_per_user
        )

    user_codes, user_vocab = _vocab_codes(events.get_column("user_id"))
    item_codes, item_vocab = _vocab_codes(events.get_column("item_id"))
    counts = np.bincount(user_codes - 1, minlength=len(user_vocab))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    if has_time:
        times = events.get_column("timestamp").dt.epoch("s").to_numpy().astype(np.int64)
    else:
        times = (np.arange(events.height) - np.repeat(offsets[:-1], counts)).astype(np.int64)

    if "event_type" in events.columns:
        type_codes, type_vocab = _vocab_codes(events.get_column("event_type").cast(pl.Utf8))
    else:
        type_codes, type_vocab = np.zeros(events.height, np.int64), []
    if "category" in events.columns:
        cat_codes, cat_vocab = _vocab_codes(events.get_column("category").cast(pl.Utf8))
    else:
        cat_codes, cat_vocab = np.zeros(events.height, np.int64), []

    titles = None
    if raw.items is not None and "title" in raw.items.columns:
        table = raw.items.select("item_id", pl.col("title").cast(pl.Utf8)).unique(
            "item_id", keep="first", maintain_order=True
        )
        stats["catalogue_items_without_events"] = table.height - table.join(
            pl.DataFrame({"item_id": item_vocab}).cast({"item_id": table.schema["item_id"]}),
            on="item_id",
            how="semi",
        ).height
        titles = (
            pl.DataFrame({"item_id": item_vocab})
            .cast({"item_id": table.schema["item_id"]})
            .join(table, on="item_id", how="left", maintain_order="left")
            .get_column("title")
            .to_list()
        )

    prepared = PreparedData(
        offsets=offsets,
        items=item_codes,
        times=times,
        event_types=type_codes,
        categories=cat_codes,
        item_vocab=item_vocab,
        user_vocab=user_vocab,
        event_type_vocab=[str(v) for v in type_vocab],
        category_vocab=[str(v) for v in cat_vocab],
        has_time=has_time,
        item_titles=titles,
    )
    prepared.stats = {**stats, **describe(prepared)}
    return prepared


def describe(data: PreparedData) -> dict:
    """Statistics printed by ``recsys prepare`` and stored with the cache."""
    lengths = np.diff(data.offsets)
    same_user = np.diff(data.user_of_event) == 0
    equal_times = (np.diff(data.times) == 0) & same_user
    out = {
        "users": data.num_users,
        "items": data.num_items,
        "events": data.num_events,
        "has_timestamps": data.has_time,
        "seq_len_min": int(lengths.min()),
        "seq_len_p50": float(np.percentile(lengths, 50)),
        "seq_len_p90": float(np.percentile(lengths, 90)),
        "seq_len_p99": float(np.percentile(lengths, 99)),
        "seq_len_max": int(lengths.max()),
        "event_types": {
            name: int((data.event_types == i + 1).sum()) for i, name in enumerate(data.event_type_vocab)
        },
        "categories": data.num_categories,
    }
    if data.has_time:
        out["time_first"] = str(np.datetime64(int(data.times.min()), "s")) + "Z"
        out["time_last"] = str(np.datetime64(int(data.times.max()), "s")) + "Z"
        out["equal_timestamp_share"] = float(equal_times.sum() / max(same_user.sum(), 1))
    return out


def fingerprint(reader: DatasetReader, config: PreparationConfig) -> str:
    h = hashlib.sha256()
    h.update(reader.fingerprint().encode())
    h.update(json.dumps(vars(config), sort_keys=True).encode())
    h.update(f"{PREPARE_VERSION}|{__version__}".encode())
    return h.hexdigest()[:16]


_ARRAYS = ("offsets", "items", "times", "event_types", "categories")


def save_prepared(data: PreparedData, folder: Path) -> None:
    """Write ``data`` into ``folder`` atomically (temporary sibling folder, then rename)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        np.savez(tmp / "arrays.npz", **{k: getattr(data, k) for k in _ARRAYS})
        items_table = {"item_id": pl.Series(data.item_vocab)}
        if data.item_titles is not None:
            items_table["title"] = pl.Series(data.item_titles, dtype=pl.Utf8)
        pl.DataFrame(items_table).write_parquet(tmp / "items.parquet")
        pl.DataFrame({"user_id": pl.Series(data.user_vocab)}).write_parquet(tmp / "users.parquet")
        meta = {
            "event_type_vocab": data.event_type_vocab,
            "category_vocab": data.category_vocab,
            "has_time": data.has_time,
            "stats": data.stats,
            "fingerprint": data.fingerprint,
            "version": PREPARE_VERSION,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if folder.exists():  # a concurrent run finished first: keep its (identical) result
            shutil.rmtree(tmp)
            return
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_prepared(folder: Path) -> PreparedData:
    folder = Path(folder)
    arrays = np.load(folder / "arrays.npz")
    meta = json.loads((folder / "meta.json").read_text())
    items = pl.read_parquet(folder / "items.parquet")
    return PreparedData(
        **{k: arrays[k] for k in _ARRAYS},
        item_vocab=items.get_column("item_id").to_list(),
        user_vocab=pl.read_parquet(folder / "users.parquet").get_column("user_id").to_list(),
        event_type_vocab=meta["event_type_vocab"],
        category_vocab=meta["category_vocab"],
        has_time=meta["has_time"],
        item_titles=items.get_column("title").to_list() if "title" in items.columns else None,
        stats=meta["stats"],
        fingerprint=meta["fingerprint"],
    )


def prepare(
    reader: DatasetReader, config: PreparationConfig, cache_dir: str | Path | None, name: str
) -> PreparedData:
    """Prepared data for ``reader``: from the cache when its fingerprint matches, else built."""
    key = fingerprint(reader, config)
    folder = Path(cache_dir) / f"{name}-{key}" if cache_dir else None
    if folder is not None and (folder / "meta.json").exists():
        log.info("Using prepared data from %s", folder)
        data = load_prepared(folder)
        data.stats["cache"] = str(folder)
        return data
    raw = reader.read()
    data = prepare_events(raw, config)
    data.fingerprint = key
    if folder is not None:
        save_prepared(data, folder)
        log.info("Prepared data cached in %s", folder)
        data.stats["cache"] = str(folder)
    return data
