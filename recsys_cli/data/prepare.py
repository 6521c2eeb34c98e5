"""Preparation: canonical events -> deduplicated, filtered, indexed, time-sorted arrays, cached.

:func:`prepare_events` is the pipeline (dedup, k-core, id mapping, stable sort, CSR layout) and
warns about everything it drops; :func:`prepare` takes the result from the cache when it is there,
else prepares it and caches it. The prepared form and its settings are in
:mod:`recsys_cli.data.prepared_data`, its statistics in :mod:`recsys_cli.data.prepare_stats`, the
cache on disk in :mod:`recsys_cli.data.prepared_cache` (bump ``PREPARE_VERSION`` there when the
preparation logic here changes).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.data.formats.canonical import assemble as canon
from recsys_cli.data.prepare_stats import describe
from recsys_cli.data.prepared_cache import (
    discard_damaged,
    fingerprint,
    load_prepared,
    remove_dead_tmp,
    save_prepared,
)
from recsys_cli.data.prepared_data import PreparationConfig, PreparedData
from recsys_cli.errors import ConfigError, DataError

log = logging.getLogger(__name__)


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


def _context_codes(raw: RawDataset) -> dict[str, tuple[np.ndarray, pl.Series]]:
    """Codes and sorted values (:func:`_codes`) of every context column the reader names
    (``raw.context``, from ``data.columns.context``), by name in config order."""
    out = {}
    for name in raw.context:
        if name not in raw.events.columns:
            raise DataError(
                f"dataset '{raw.name}': the reader names the context column '{name}' but returned "
                f"no such column (columns: {raw.events.columns})"
            )
        out[name] = _codes(raw.events.get_column(name).cast(pl.Utf8))
    return out


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
    event types, categories and context columns (sorted raw values -> 1..V); a stable sort by
    (user, time) that keeps the file order on equal timestamps; duplicates (same user, item, time
    and event type; without timestamps same user, item and type; the context columns do not
    matter) dropped keeping the first; the k-core filter; at most ``max_events_per_user`` newest
    events per user; codes renumbered to what remains (the context columns go with their events
    through every step); the items' titles and text fields aligned with the item vocabulary
    (:func:`_item_text`; the category, when the items table has none, is each item's most
    frequent event category).
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
    stats: dict = {**getattr(raw, "read_stats", {}), "raw_events": events.height}

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
    context = _context_codes(raw)  # {name: (codes, vocab)}, reordered and filtered as the rest
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
    context = {name: (codes[order], vocab) for name, (codes, vocab) in context.items()}
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
    context = {name: (codes[keep], vocab) for name, (codes, vocab) in context.items()}
    if stamps is not None:
        stamps = stamps[keep]
    del keep

    user_codes, user_vocab = _compact(user_codes, user_vocab)
    item_codes, item_vocab = _compact(item_codes, item_vocab)
    type_codes, type_vocab = _compact(type_codes, type_vocab)
    cat_codes, cat_vocab = _compact(cat_codes, cat_vocab)
    context = {name: _compact(codes, vocab) for name, (codes, vocab) in context.items()}
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

    titles, fields = _item_text(raw.items, item_vocab, stats)
    if "category" not in fields and len(cat_vocab):
        best = _main_category(item_codes, cat_codes, len(item_vocab))
        names = [None, *(str(v) for v in cat_vocab.to_list())]
        fields["category"] = [names[c] for c in best[1:].tolist()]
    fields = {name: fields[name] for name in canon.ITEM_TEXT_COLUMNS if name in fields}
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
        item_fields=fields,
        context={name: codes for name, (codes, _) in context.items()},
        context_vocab={
            name: [str(v) for v in vocab.to_list()] for name, (_, vocab) in context.items()
        },
    )
    prepared.stats = {**stats, **describe(prepared)}
    _log_cleaning(raw.name, prepared.stats, config)
    return prepared


def _item_text(items: pl.DataFrame | None, item_vocab: pl.Series, stats: dict) -> tuple:
    """The items table's titles as they are (``item_titles``) and its text fields (trimmed, None
    where empty; a field without any value is left out), both over the item vocabulary. A title
    ending with its item's year in parentheses loses it in the fields (the year is a field)."""
    if items is None or "item_id" not in items.columns:
        return None, {}
    table = items.unique("item_id", keep="first", maintain_order=True)
    kept_items = pl.DataFrame({"item_id": item_vocab}).cast(
        {"item_id": table.schema["item_id"]}, strict=False
    )
    stats["catalogue_items"] = table.height
    stats["catalogue_items_without_events"] = (
        table.height - table.join(kept_items, on="item_id", how="semi").height
    )
    text = [c for c in canon.ITEM_TEXT_COLUMNS if c in table.columns]
    aligned = kept_items.join(
        table.select("item_id", *(pl.col(c).cast(pl.Utf8) for c in text)),
        on="item_id",
        how="left",
        maintain_order="left",
    )
    titles = aligned.get_column("title").to_list() if "title" in text else None
    if "title" in text and "year" in text:
        title = pl.col("title")
        own_year = (canon.title_year(title) == pl.col("year")).fill_null(False)
        without = title.str.replace(canon.TITLE_YEAR, "").str.strip_chars_end()
        aligned = aligned.with_columns(pl.when(own_year).then(without).otherwise(title))
    values = aligned.select(canon.text_or_null(pl.col(c)).alias(c) for c in text)
    return titles, {c: values[c].to_list() for c in text if values[c].null_count() < len(values)}


def _main_category(items: np.ndarray, cats: np.ndarray, num_items: int) -> np.ndarray:
    """[N + 1] each item's most frequent event category (ties: the smallest index), 0 for none.

    An item whose events share one category (the common case) gets it from their mean, in O(E);
    only the events of the other items are counted by (item, category)."""
    known = cats > 0
    items, cats = items[known], cats[known]
    n = np.bincount(items, minlength=num_items + 1)
    mean = np.bincount(items, weights=cats, minlength=num_items + 1) / np.maximum(n, 1)
    best = np.rint(mean).astype(np.int64)  # exact where the categories are all equal
    sel = np.isin(items, items[cats != mean[items]])  # the events of items of mixed categories
    if sel.any():
        width = int(cats.max()) + 1
        pairs, counts = np.unique(items[sel] * width + cats[sel], return_counts=True)
        item_of, cat_of = np.divmod(pairs, width)
        order = np.lexsort((cat_of, -counts, item_of))
        item_of, cat_of = item_of[order], cat_of[order]
        head = np.r_[True, item_of[1:] != item_of[:-1]]
        best[item_of[head]] = cat_of[head]
    return best


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
    if folder is not None and folder.resolve().parent != Path(cache_dir).resolve():
        raise ConfigError(
            f"data.name={name!r}: the prepared cache would go to {folder}, outside paths.cache_dir; "
            "use a plain name (no '/', '\\' or '..'), such as 'ml-1m'"
        )
    remove_dead_tmp(cache_dir)  # what killed preparations left
    if folder is not None and (folder / "meta.json").exists():
        try:
            data = load_prepared(folder, key)
        except Exception as exc:  # noqa: BLE001 - any damage means: rebuild
            log.warning("Cache %s is unreadable (%s); preparing again", folder, exc)
            discard_damaged(folder)
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
