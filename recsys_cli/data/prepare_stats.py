"""Statistics of prepared data and their printing.

:func:`describe` computes what ``recsys prepare`` prints and the cache stores (sizes,
sequence-length percentiles, events per type, repeat share, time span); :func:`repeat_share` is
also what ``metrics.filter_seen=auto`` decides on; :data:`STAT_LABELS` and :func:`format_stats`
turn the statistics into aligned terminal lines. (The warnings about dropped data are logged by
the pipeline itself, in :mod:`recsys_cli.data.prepare`.)
"""

from __future__ import annotations

import numpy as np

from recsys_cli.data.prepared_data import PreparedData


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
    percentiles, events per event type, the context columns' numbers of values, the share of repeated (user, item) events, time span and
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
    if data.context_vocab:  # the context columns of data.columns.context: values per column
        out["context_columns"] = {name: len(vocab) for name, vocab in data.context_vocab.items()}
    if data.has_time:
        equal = (np.diff(data.times) == 0) & ~starts_of_user[1:]
        first, last = int(data.times.min()), int(data.times.max())
        out["time_first"] = str(np.datetime64(first, "s")) + "Z"
        out["time_last"] = str(np.datetime64(last, "s")) + "Z"
        out["time_span_days"] = round((last - first) / 86400, 2)
        out["equal_timestamp_share"] = float(equal.sum() / max(pairs, 1))
    return out


STAT_LABELS = {
    "invalid_timestamps_dropped": "rows dropped (invalid timestamps)",
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
    "context_columns": "context columns (values)",
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
        elif key in ("event_types", "context_columns"):
            value = ", ".join(f"{k} {v:,}" for k, v in value.items()) or "(none)"
        elif key in ("equal_timestamp_share", "repeat_share"):
            value = f"{value:.1%}"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        rows.append((label, str(value)))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)
