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
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recsys_cli import __version__
from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Bump when the prepared layout or the preparation logic changes: invalidates every cache.
PREPARE_VERSION = 3


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


def _codes(column: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """[E] int64 codes 1..V in the sorted order of the distinct values (0 for null), and the V
    sorted values. Integer ids use a lookup table when their range is compact (one pass), else a
    binary search; other types a hash map."""
    vocab = column.drop_nulls().unique().sort()
    if len(vocab) == 0:
        return np.zeros(len(column), dtype=np.int64), vocab
    if column.dtype.is_integer():
        lo, hi = int(vocab[0]), int(vocab[-1])
        values = column.fill_null(lo).to_numpy().astype(np.int64, copy=False)
        if hi - lo < max(4 * len(column), 1 << 20):
            lut = np.zeros(hi - lo + 1, dtype=np.int64)
            lut[vocab.to_numpy().astype(np.int64) - lo] = np.arange(1, len(vocab) + 1)
            codes = lut[values - lo]
        else:
            codes = np.searchsorted(vocab.to_numpy().astype(np.int64), values) + 1
        if column.null_count():
            codes[column.is_null().to_numpy()] = 0
        return codes, vocab
    mapping = pl.int_range(1, len(vocab) + 1, eager=True)
    codes = column.replace_strict(vocab, mapping, default=0, return_dtype=pl.Int64)
    return codes.to_numpy(), vocab


def _compact(codes: np.ndarray, vocab: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Renumber codes 1..V to the values that still occur (keeping their order; 0 stays 0)."""
    present = np.bincount(codes, minlength=len(vocab) + 1) > 0
    present[0] = False
    renumber = np.cumsum(present)
    return renumber[codes], vocab.filter(pl.Series(present[1:]))


def _stable_order(users: np.ndarray, times: np.ndarray | None) -> np.ndarray:
    """Permutation sorting events by (user, time), keeping the given order on ties."""
    if times is None or len(times) == 0:
        return np.argsort(users, kind="stable")
    t0 = int(times.min())
    span = int(times.max()) - t0 + 1
    if (int(users.max()) + 1) * span < 2**62:  # one packed key, one sort
        return np.argsort(users * span + (times - t0), kind="stable")
    by_time = np.argsort(times, kind="stable")  # two stable passes (least significant first)
    return by_time[np.argsort(users[by_time], kind="stable")]


def _duplicates(
    users: np.ndarray, times: np.ndarray, items: np.ndarray, types: np.ndarray
) -> np.ndarray:
    """[E] True for every event equal in (user, time, item, event type) to an earlier one.

    The inputs are sorted by (user, time), ties in file order, so duplicates lie in runs of equal
    (user, time); only events in runs longer than one are compared.
    """
    n = len(users)
    dup = np.zeros(n, dtype=bool)
    if n < 2:
        return dup
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (users[1:] != users[:-1]) | (times[1:] != times[:-1])
    run = np.cumsum(new_run) - 1
    cand = np.flatnonzero(np.bincount(run)[run] > 1)
    if len(cand) == 0:
        return dup
    r, i, e = run[cand], items[cand], types[cand]
    vi, ve = int(i.max()) + 1, int(e.max()) + 1
    if (int(r.max()) + 1) * vi * ve < 2**62:
        key = (r * vi + i) * ve + e
        order = np.argsort(key, kind="stable")  # equal keys stay in file order
        ks = key[order]
        same = ks[1:] == ks[:-1]
    else:
        order = np.lexsort((e, i, r))
        same = (r[order][1:] == r[order][:-1]) & (i[order][1:] == i[order][:-1])
        same &= e[order][1:] == e[order][:-1]
    dup[cand[order[1:][same]]] = True
    return dup


def _kcore(
    users: np.ndarray, items: np.ndarray, keep: np.ndarray, min_user: int, min_item: int
) -> tuple[np.ndarray, int]:
    """Iteratively drop users with < min_user kept events and items with < min_item (in place)."""
    rounds = 0
    kept = int(keep.sum())
    while True:
        rounds += 1
        if min_item > 1:
            keep &= np.bincount(items[keep], minlength=int(items.max()) + 1)[items] >= min_item
        keep &= np.bincount(users[keep], minlength=int(users.max()) + 1)[users] >= min_user
        now = int(keep.sum())
        if now == kept or now == 0:
            return keep, rounds
        kept = now


def prepare_events(raw: RawDataset, config: PreparationConfig) -> PreparedData:
    """Deduplicate, filter, index and sort the canonical events (see the module docstring).

    Steps, all on integer codes with numpy (no per-user Python work): codes for users, items,
    event types and categories (sorted raw values -> 1..V); a stable sort by (user, time) that
    keeps the file order on equal timestamps; duplicates (same user, item, time and event type;
    without timestamps same user, item and type) dropped keeping the first; the k-core filter;
    at most ``max_events_per_user`` newest events per user; codes renumbered to what remains.
    """
    events = raw.events
    if events.height == 0:
        raise DataError(
            f"dataset '{raw.name}' has no events; check data.path and the file contents"
        )
    for col in ("user_id", "item_id"):
        if col not in events.columns:
            raise DataError(
                f"dataset '{raw.name}': the reader returned no '{col}' column "
                f"(columns: {events.columns})"
            )
        if events.get_column(col).null_count():
            raise DataError(
                f"dataset '{raw.name}': {events.get_column(col).null_count()} events have no {col}; "
                "the reader must drop or reject them"
            )
    has_time = raw.has_time
    stats: dict = {"raw_events": events.height}

    user_codes, user_vocab = _codes(events.get_column("user_id"))
    item_codes, item_vocab = _codes(events.get_column("item_id"))
    type_codes, type_vocab = (
        _codes(events.get_column("event_type").cast(pl.Utf8))
        if "event_type" in events.columns
        else (np.zeros(events.height, np.int64), pl.Series([], dtype=pl.Utf8))
    )
    cat_codes, cat_vocab = (
        _codes(events.get_column("category").cast(pl.Utf8))
        if "category" in events.columns
        else (np.zeros(events.height, np.int64), pl.Series([], dtype=pl.Utf8))
    )
    stamps = None
    if has_time:
        ts = events.get_column("timestamp")
        if ts.null_count():
            raise DataError(
                f"dataset '{raw.name}': {ts.null_count()} events have no timestamp; "
                "the reader must drop or reject them"
            )
        stamps = ts.dt.epoch("us").to_numpy().astype(np.int64, copy=False)

    # Stable sort: equal timestamps keep the file order (common in ML-1M).
    order = _stable_order(user_codes, stamps)
    user_codes, item_codes = user_codes[order], item_codes[order]
    type_codes, cat_codes = type_codes[order], cat_codes[order]
    if stamps is not None:
        stamps = stamps[order]
    del order

    if config.dedup:
        same_time = stamps if stamps is not None else np.zeros_like(user_codes)
        keep = ~_duplicates(user_codes, same_time, item_codes, type_codes)
    else:
        keep = np.ones(len(user_codes), dtype=bool)
    stats["duplicates_dropped"] = int(len(keep) - keep.sum())

    users_before, items_before = len(user_vocab), len(item_vocab)
    single = np.bincount(user_codes[keep], minlength=users_before + 1)[1:] == 1
    keep, rounds = _kcore(
        user_codes, item_codes, keep, config.min_user_events, config.min_item_events
    )
    if not keep.any():
        raise DataError(
            f"dataset '{raw.name}': no events left after filtering users with fewer than "
            f"{config.min_user_events} events and items with fewer than {config.min_item_events}; "
            "lower data.preparation.min_user_events / min_item_events"
        )
    if config.max_events_per_user is not None:
        # the newest max_events_per_user kept events of every user
        kept_idx = np.flatnonzero(keep)
        u = user_codes[kept_idx]
        ends = np.cumsum(np.bincount(u, minlength=users_before + 1))
        keep[kept_idx[ends[u] - np.arange(len(u)) > config.max_events_per_user]] = False
    user_codes, item_codes = user_codes[keep], item_codes[keep]
    type_codes, cat_codes = type_codes[keep], cat_codes[keep]
    if stamps is not None:
        stamps = stamps[keep]
    del keep

    user_codes, user_vocab = _compact(user_codes, user_vocab)
    item_codes, item_vocab = _compact(item_codes, item_vocab)
    type_codes, type_vocab = _compact(type_codes, type_vocab)
    cat_codes, cat_vocab = _compact(cat_codes, cat_vocab)
    stats["filter_rounds"] = rounds
    stats["users_dropped"] = users_before - len(user_vocab)
    stats["single_event_users"] = int(single.sum())
    stats["items_dropped"] = items_before - len(item_vocab)

    counts = np.bincount(user_codes - 1, minlength=len(user_vocab))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if stamps is not None:
        times = np.floor_divide(stamps, 1_000_000)
    else:
        times = np.arange(len(user_codes), dtype=np.int64) - np.repeat(offsets[:-1], counts)

    titles = None
    if raw.items is not None and "item_id" in raw.items.columns:
        table = raw.items.unique("item_id", keep="first", maintain_order=True)
        kept_items = pl.DataFrame({"item_id": item_vocab}).cast(
            {"item_id": table.schema["item_id"]}, strict=False
        )
        stats["catalogue_items"] = table.height
        stats["catalogue_items_without_events"] = (
            table.height - table.join(kept_items, on="item_id", how="semi").height
        )
        if "title" in table.columns:
            titles = (
                kept_items.join(
                    table.select("item_id", pl.col("title").cast(pl.Utf8)),
                    on="item_id",
                    how="left",
                    maintain_order="left",
                )
                .get_column("title")
                .to_list()
            )
    users_table = getattr(raw, "users", None)
    if users_table is not None and "user_id" in users_table.columns:
        kept_users = pl.DataFrame({"user_id": user_vocab}).cast(
            {"user_id": users_table.schema["user_id"]}, strict=False
        )
        table = users_table.unique("user_id")
        stats["user_table_users"] = table.height
        stats["user_table_users_without_events"] = (
            table.height - table.join(kept_users, on="user_id", how="semi").height
        )

    prepared = PreparedData(
        offsets=offsets,
        items=item_codes,
        times=times,
        event_types=type_codes,
        categories=cat_codes,
        item_vocab=item_vocab.to_list(),
        user_vocab=user_vocab.to_list(),
        event_type_vocab=[str(v) for v in type_vocab.to_list()],
        category_vocab=[str(v) for v in cat_vocab.to_list()],
        has_time=has_time,
        item_titles=titles,
    )
    prepared.stats = {**stats, **describe(prepared)}
    _log_cleaning(raw.name, prepared.stats, config)
    return prepared


def _log_cleaning(name: str, stats: dict, config: PreparationConfig) -> None:
    """One warning line per kind of dropped data, so nothing disappears silently."""
    if stats["duplicates_dropped"]:
        log.warning(
            "%s: dropped %d duplicate events (same user, item, time and event type)",
            name,
            stats["duplicates_dropped"],
        )
    if stats["users_dropped"]:
        log.warning(
            "%s: dropped %d users with fewer than %d events (%d had a single event)",
            name,
            stats["users_dropped"],
            config.min_user_events,
            stats["single_event_users"],
        )
    if stats["items_dropped"]:
        log.warning(
            "%s: dropped %d items (fewer than %d events, or only with dropped users)",
            name,
            stats["items_dropped"],
            config.min_item_events,
        )
    if stats.get("catalogue_items_without_events"):
        log.warning(
            "%s: %d items of the item table have no events (kept out of the vocabulary)",
            name,
            stats["catalogue_items_without_events"],
        )


def repeat_share(data: PreparedData) -> float:
    """The share of events whose item the same user already had earlier (repeat consumption).

    About 0 for ratings (an item is rated once), large for shop logs where items are viewed again,
    carted and bought. ``metrics.filter_seen=auto`` filters seen items only when it is small."""
    if data.num_events == 0:
        return 0.0
    users = np.repeat(np.arange(data.num_users, dtype=np.int64), np.diff(data.offsets))
    pairs = np.unique(users * (data.num_items + 1) + data.items).size
    return float(1.0 - pairs / data.num_events)


def describe(data: PreparedData) -> dict:
    """Statistics printed by ``recsys prepare`` and stored with the cache: sizes, sequence-length
    percentiles, events per event type, the share of repeated (user, item) events, time span and
    the share of a user's consecutive events with equal timestamps."""
    lengths = np.diff(data.offsets)
    starts_of_user = np.zeros(data.num_events, dtype=bool)
    starts_of_user[data.offsets[:-1][lengths > 0]] = True
    pairs = data.num_events - int(starts_of_user.sum())  # consecutive pairs inside a user
    per_type = np.bincount(data.event_types, minlength=data.num_event_types + 1)
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
        "event_types": {name: int(per_type[i + 1]) for i, name in enumerate(data.event_type_vocab)},
        "categories": data.num_categories,
        "repeat_share": repeat_share(data),
    }
    if data.has_time:
        equal = (np.diff(data.times) == 0) & ~starts_of_user[1:]
        first, last = int(data.times.min()), int(data.times.max())
        out["time_first"] = str(np.datetime64(first, "s")) + "Z"
        out["time_last"] = str(np.datetime64(last, "s")) + "Z"
        out["time_span_days"] = round((last - first) / 86400, 2)
        out["equal_timestamp_share"] = float(equal.sum() / max(pairs, 1))
    return out


STAT_LABELS = {
    "raw_events": "events read",
    "duplicates_dropped": "duplicate events dropped",
    "users_dropped": "users dropped (too few events)",
    "single_event_users": "  of which with a single event",
    "items_dropped": "items dropped",
    "catalogue_items_without_events": "item-table items without events",
    "user_table_users_without_events": "user-table users without events",
    "users": "users",
    "items": "items",
    "events": "events",
    "event_types": "events per type",
    "categories": "categories",
    "repeat_share": "events repeating an item of the user",
    "seq_len_p50": "sequence length p50",
    "time_first": "first event",
    "time_last": "last event",
    "time_span_days": "time span (days)",
    "equal_timestamp_share": "equal consecutive timestamps",
    "cache": "cache",
}


def format_stats(stats: dict) -> str:
    """The statistics as aligned ``label: value`` lines for a terminal."""
    rows = []
    for key, label in STAT_LABELS.items():
        if key not in stats:
            continue
        value = stats[key]
        if key == "seq_len_p50":
            label = "sequence length min/p50/p90/p99/max"
            value = "/".join(
                f"{stats[k]:g}"
                for k in ("seq_len_min", "seq_len_p50", "seq_len_p90", "seq_len_p99", "seq_len_max")
            )
        elif key == "event_types":
            value = ", ".join(f"{k} {v:,}" for k, v in value.items()) or "(none)"
        elif key in ("equal_timestamp_share", "repeat_share"):
            value = f"{value:.1%}"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        rows.append((label, str(value)))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def fingerprint(reader: DatasetReader, config: PreparationConfig) -> str:
    """Cache key: the reader's input files and settings, the preparation config, the code version."""
    h = hashlib.sha256()
    h.update(reader.fingerprint().encode())
    h.update(json.dumps(vars(config), sort_keys=True).encode())
    h.update(f"{PREPARE_VERSION}|{__version__}".encode())
    return h.hexdigest()[:16]


_ARRAYS = ("offsets", "items", "times", "event_types", "categories")
_TMP_MARK = ".tmp-"
# Temporary folders of preparations killed without cleaning up are removed after this long.
_STALE_TMP_SECONDS = 6 * 3600


def save_prepared(data: PreparedData, folder: Path) -> None:
    """Write ``data`` into ``folder`` atomically: everything goes to a temporary sibling folder,
    ``meta.json`` last, and the folder is renamed into place only when complete, so an
    interrupted save leaves nothing that :func:`prepare` would load."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}{_TMP_MARK}", dir=folder.parent))
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
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        if folder.exists():  # a concurrent run finished first: keep its (identical) result
            shutil.rmtree(tmp)
            return
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_tmp(folder: Path) -> None:
    """Remove temporary folders of this cache entry left by preparations that were killed."""
    now = time.time()
    for stale in folder.parent.glob(f".{folder.name}{_TMP_MARK}*"):
        try:
            if now - stale.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def load_prepared(folder: Path, expected_fingerprint: str | None = None) -> PreparedData:
    """Read a cache folder written by :func:`save_prepared`; ValueError when it is incomplete,
    from another version or for another fingerprint."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("version") != PREPARE_VERSION:
        raise ValueError(f"cache version {meta.get('version')}, expected {PREPARE_VERSION}")
    if expected_fingerprint is not None and meta.get("fingerprint") != expected_fingerprint:
        raise ValueError(f"fingerprint {meta.get('fingerprint')}, expected {expected_fingerprint}")
    with np.load(folder / "arrays.npz") as arrays:
        loaded = {k: arrays[k] for k in _ARRAYS}
    items = pl.read_parquet(folder / "items.parquet")
    users = pl.read_parquet(folder / "users.parquet").get_column("user_id").to_list()
    n = len(loaded["items"])
    if int(loaded["offsets"][-1]) != n or len(loaded["offsets"]) != len(users) + 1:
        raise ValueError("arrays and vocabularies disagree")
    if any(len(loaded[k]) != n for k in ("times", "event_types", "categories")):
        raise ValueError("event arrays of different lengths")
    return PreparedData(
        **loaded,
        item_vocab=items.get_column("item_id").to_list(),
        user_vocab=users,
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
    """Prepared data for ``reader``: from the cache when its fingerprint matches, else built.

    The fingerprint covers the input files (path, size, mtime, first and last MiB), so a changed
    file gets a new cache entry. A cache entry that cannot be loaded (damaged by hand, an older
    version) is rebuilt. When an input file changes while it is being read, the result is used
    but not cached. A cache folder that cannot be written only costs a warning.
    """
    key = fingerprint(reader, config)
    folder = Path(cache_dir) / f"{name}-{key}" if cache_dir else None
    if folder is not None and (folder / "meta.json").exists():
        try:
            data = load_prepared(folder, key)
        except Exception as exc:  # noqa: BLE001 - any damage means: rebuild
            log.warning("Cache %s is unreadable (%s); preparing again", folder, exc)
            _discard(folder)
        else:
            log.info("Using prepared data from %s", folder)
            data.stats["cache"] = str(folder)
            return data
    raw = reader.read()
    data = prepare_events(raw, config)
    data.fingerprint = key
    if folder is None:
        return data
    if fingerprint(reader, config) != key:
        log.warning(
            "%s: an input file changed while it was being read; the result is not cached "
            "(run again to prepare the new version)",
            name,
        )
        return data
    try:
        save_prepared(data, folder)
    except OSError as exc:
        log.warning(
            "Cannot write the cache %s (%s); continuing without it (set paths.cache_dir to a "
            "writable folder)",
            folder,
            exc,
        )
        return data
    log.info("Prepared data cached in %s", folder)
    data.stats["cache"] = str(folder)
    return data


def _discard(folder: Path) -> None:
    """Move a damaged cache folder aside (atomically) and delete it."""
    trash = folder.with_name(f".{folder.name}{_TMP_MARK}damaged-{os.getpid()}")
    try:
        os.replace(folder, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)
