"""Preparation: equivalence with a plain polars reference, statistics, and the cache's life cycle."""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import REPO
from fixtures_formats import TAOBAO, write_bytes, write_recbole
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_cli.data import prepared_cache
from recsys_cli.data.formats import RecBoleReader, TaobaoReader
from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.data.prepare import prepare, prepare_events
from recsys_cli.data.prepare_stats import describe, format_stats, repeat_share
from recsys_cli.data.prepared_data import PreparationConfig
from recsys_cli.errors import ConfigError, DataError

UTC = pl.Datetime("us", "UTC")


# -- a straightforward polars reference of the same steps ------------------------------------------


def reference(raw: RawDataset, config: PreparationConfig) -> dict:
    """Dedup (keep first), k-core, stable sort, newest-N, sorted vocabularies: written plainly."""
    ev = raw.events
    if config.dedup:
        key = [c for c in ("user_id", "item_id", "timestamp", "event_type") if c in ev.columns]
        ev = ev.unique(subset=key, keep="first", maintain_order=True)
    while True:
        before = ev.height
        if config.min_item_events > 1:
            ev = ev.filter(pl.len().over("item_id") >= config.min_item_events)
        ev = ev.filter(pl.len().over("user_id") >= config.min_user_events)
        if ev.height in (before, 0):
            break
    ev = ev.sort(["user_id", "timestamp"] if raw.has_time else ["user_id"], maintain_order=True)
    if config.max_events_per_user is not None:
        ev = ev.filter(
            pl.int_range(pl.len()).reverse().over("user_id") < config.max_events_per_user
        )
    if ev.height == 0:
        return {"items": []}

    def codes(col: str) -> tuple[list[int], list]:
        if col not in ev.columns:
            return [0] * ev.height, []
        values = ev.get_column(col)
        if col in ("event_type", "category"):
            values = values.cast(pl.Utf8)
        vocab = sorted(values.drop_nulls().unique().to_list())
        index = {v: k + 1 for k, v in enumerate(vocab)}
        return [0 if v is None else index[v] for v in values.to_list()], vocab

    users, user_vocab = codes("user_id")
    items, item_vocab = codes("item_id")
    types, type_vocab = codes("event_type")
    cats, cat_vocab = codes("category")
    lengths = np.bincount(np.array(users) - 1, minlength=len(user_vocab))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if raw.has_time:
        times = ev.get_column("timestamp").dt.epoch("s").to_list()
    else:
        times = [i - offsets[u - 1] for i, u in enumerate(users)]
    return {
        "offsets": offsets.tolist(),
        "items": items,
        "times": times,
        "event_types": types,
        "categories": cats,
        "item_vocab": item_vocab,
        "user_vocab": user_vocab,
        "event_type_vocab": type_vocab,
        "category_vocab": cat_vocab,
    }


@st.composite
def raw_events(draw):
    n = draw(st.integers(1, 60))
    string_ids = draw(st.booleans())
    users = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, 8), min_size=n, max_size=n))
    data: dict = {
        "user_id": [f"u{u}" for u in users] if string_ids else users,
        "item_id": items,
    }
    if draw(st.booleans()):  # few distinct seconds: many ties and exact duplicates
        secs = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
        data["timestamp"] = pl.Series(
            [datetime.fromtimestamp(1_600_000_000 + 7 * s, tz=timezone.utc) for s in secs],
            dtype=UTC,
        )
    if draw(st.booleans()):
        data["event_type"] = draw(
            st.lists(st.sampled_from(["view", "buy", None]), min_size=n, max_size=n)
        )
    if draw(st.booleans()):
        data["category"] = draw(st.lists(st.sampled_from(["a", "b", None]), min_size=n, max_size=n))
    return RawDataset(pl.DataFrame(data))


@settings(max_examples=150, deadline=None)
@given(
    raw=raw_events(),
    dedup=st.booleans(),
    min_user=st.integers(2, 4),
    min_item=st.integers(1, 3),
    max_events=st.sampled_from([None, 2, 3]),
)
def test_matches_polars_reference(raw, dedup, min_user, min_item, max_events):
    config = PreparationConfig(dedup, min_user, min_item, max_events)
    expected = reference(raw, config)
    if not expected["items"]:
        with pytest.raises(DataError, match="no events left after filtering"):
            prepare_events(raw, config)
        return
    got = prepare_events(raw, config)
    for key, value in expected.items():
        actual = getattr(got, key)
        assert (actual.tolist() if isinstance(actual, np.ndarray) else actual) == value, key
    for key in ("offsets", "items", "times", "event_types", "categories"):
        assert getattr(got, key).dtype == np.int64, key
    assert got.stats["events"] == len(expected["items"])


def _raw(rows: list[tuple], items: pl.DataFrame | None = None) -> RawDataset:
    """Events from (user, item, unix seconds) rows."""
    users, its, secs = zip(*rows, strict=True)
    return RawDataset(
        pl.DataFrame(
            {
                "user_id": list(users),
                "item_id": list(its),
                "timestamp": pl.Series(
                    [datetime.fromtimestamp(s, tz=timezone.utc) for s in secs], dtype=UTC
                ),
            }
        ),
        items=items,
        name="toy",
    )


def test_equal_timestamps_keep_file_order():
    raw = _raw([(1, 30, 100), (1, 10, 100), (1, 20, 50), (1, 40, 100)])
    data = prepare_events(raw, PreparationConfig())
    assert [data.item_vocab[i - 1] for i in data.items] == [20, 30, 10, 40]
    assert data.times.tolist() == [50, 100, 100, 100]


def test_cleaning_is_counted_and_reported(caplog):
    items = pl.DataFrame({"item_id": [10, 11, 12, 99], "title": ["a", "b", "c", "never seen"]})
    raw = _raw(
        [
            (1, 10, 100),
            (1, 10, 100),  # duplicate of the line above
            (1, 11, 200),
            (2, 12, 300),  # user 2 has one event: dropped
            (3, 10, 50),
            (3, 11, 60),
        ],
        items,
    )
    with caplog.at_level(logging.WARNING):
        data = prepare_events(raw, PreparationConfig())
    s = data.stats
    assert s["raw_events"] == 6 and s["events"] == 4
    assert s["duplicates_dropped"] == 1
    assert s["users_dropped"] == 1 and s["single_event_users"] == 1
    assert s["items_dropped"] == 1  # item 12 went with user 2
    assert s["catalogue_items"] == 4 and s["catalogue_items_without_events"] == 2  # 12 and 99
    assert data.item_titles == ["a", "b"]
    text = caplog.text
    assert "dropped 1 duplicate events" in text and "1 had a single event" in text
    assert "2 items of the item table have no events" in text
    shown = format_stats(s)
    assert "duplicate events dropped" in shown and "item-table items without events" in shown


def test_describe_statistics():
    raw = _raw(
        [(1, 1, 0), (1, 2, 0), (1, 3, 86400), (2, 1, 10), (2, 2, 10), (2, 3, 10), (2, 4, 20)]
    )
    s = describe(prepare_events(raw, PreparationConfig()))
    assert (s["users"], s["items"], s["events"]) == (2, 4, 7)
    assert (s["seq_len_min"], s["seq_len_max"], s["seq_len_p50"]) == (3, 4, 3.5)
    assert s["time_first"] == "1970-01-01T00:00:00Z" and s["time_span_days"] == 1.0
    # consecutive pairs inside users: (0,0) (0,86400) | (10,10) (10,10) (10,20): 3 of 5 equal
    assert s["equal_timestamp_share"] == pytest.approx(3 / 5)
    assert s["repeat_share"] == 0.0


def test_repeat_share_and_auto_seen_filtering():
    from recsys_cli.builders import resolve_filter_seen

    # user 1 sees item 1 three times and item 2 once; user 2 has item 1 once (not a repeat of user 1's)
    raw = _raw([(1, 1, 0), (1, 2, 1), (1, 1, 2), (1, 1, 3), (2, 1, 0), (2, 3, 1)])
    data = prepare_events(raw, PreparationConfig(dedup=False))
    assert repeat_share(data) == pytest.approx(2 / 6) == data.stats["repeat_share"]
    assert re.search(r"^events repeating an item of the user +33\.3%$", format_stats(data.stats), re.M)
    assert resolve_filter_seen("auto", data) is False  # shop-like log: repeated targets stay rankable
    assert resolve_filter_seen(True, data) is True
    ratings = prepare_events(_raw([(1, 1, 0), (1, 2, 1), (2, 1, 0), (2, 3, 1)]), PreparationConfig())
    assert repeat_share(ratings) == 0.0 and resolve_filter_seen("auto", ratings) is True
    assert resolve_filter_seen(False, ratings) is False


def test_event_type_counts_and_no_time_positions():
    raw = RawDataset(
        pl.DataFrame(
            {
                "user_id": ["b", "a", "b", "a"],
                "item_id": [1, 2, 3, 1],
                "event_type": ["buy", "view", "view", "view"],
            }
        )
    )
    data = prepare_events(raw, PreparationConfig())
    assert not data.has_time and data.user_vocab == ["a", "b"]
    assert data.times.tolist() == [0, 1, 0, 1]
    assert data.stats["event_types"] == {"buy": 1, "view": 3}
    assert "time_first" not in data.stats


def test_missing_ids_and_empty_events_are_data_errors():
    with pytest.raises(DataError, match="has no events"):
        prepare_events(
            RawDataset(pl.DataFrame({"user_id": [], "item_id": []})), PreparationConfig()
        )
    with pytest.raises(DataError, match="1 events have no user_id"):
        prepare_events(
            RawDataset(pl.DataFrame({"user_id": [1, None], "item_id": [1, 2]})), PreparationConfig()
        )
    with pytest.raises(ConfigError, match="min_user_events=1"):
        PreparationConfig(min_user_events=1)


def test_recbole_user_table_is_read_and_reported(tmp_path):
    folder = write_recbole(tmp_path / "toy")
    write_bytes(
        folder / "toy.user",
        "user_id:token\tage:token\tgender:token\n196\t49\tM\n186\t39\tF\n7\t20\tF\n",
    )
    reader = RecBoleReader(str(folder))
    raw = reader.read()
    assert raw.users.columns == ["user_id", "age", "gender"] and raw.users.height == 3
    assert folder / "toy.user" in reader.source_files()
    data = prepare_events(raw, PreparationConfig())
    # only user 196 has two events: 186 and 7 have no (kept) events
    assert (
        data.stats["user_table_users"] == 3 and data.stats["user_table_users_without_events"] == 2
    )


# -- cache life cycle ------------------------------------------------------------------------------


class CountingReader(DatasetReader):
    """Taobao reader that counts its reads."""

    def __init__(self, path: Path):
        self.inner = TaobaoReader(str(path))
        self.reads = 0

    def source_files(self) -> list[Path]:
        return self.inner.source_files()

    def settings(self) -> dict:
        return self.inner.settings()

    def read(self) -> RawDataset:
        self.reads += 1
        return self.inner.read()


TAOBAO_MORE = TAOBAO + "100,1603476,2951233,pv,1511680000\n"


def _entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_cache_is_reused_then_rebuilt_when_the_file_changes(tmp_path):
    path = write_bytes(tmp_path / "raw" / "UserBehavior.csv", TAOBAO)
    cache = tmp_path / "cache"
    reader = CountingReader(path)
    first = prepare(reader, PreparationConfig(), cache, "taobao")
    again = prepare(reader, PreparationConfig(), cache, "taobao")
    assert reader.reads == 1 and again.stats["cache"] == first.stats["cache"]
    assert np.array_equal(again.items, first.items) and again.item_vocab == first.item_vocab

    os.utime(path)  # touched: new mtime -> new fingerprint -> prepared again
    touched = prepare(reader, PreparationConfig(), cache, "taobao")
    assert reader.reads == 2 and touched.stats["cache"] != first.stats["cache"]

    # rewritten with the same size and the old mtime restored: the content hash still differs
    st_before = path.stat()
    path.write_text(TAOBAO.replace("1511544070", "1511544071"))
    os.utime(path, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))
    assert path.stat().st_size == st_before.st_size
    rewritten = prepare(reader, PreparationConfig(), cache, "taobao")
    assert reader.reads == 3 and rewritten.times.min() == 1511544071

    path.write_text(TAOBAO_MORE)
    grown = prepare(reader, PreparationConfig(), cache, "taobao")
    assert reader.reads == 4 and grown.num_events == first.num_events + 1
    assert all(not name.startswith(".") for name in _entries(cache))


def test_interrupted_save_leaves_no_valid_cache(tmp_path, monkeypatch):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO)
    cache = tmp_path / "cache"
    reader = CountingReader(path)
    real_write = pl.DataFrame.write_parquet

    def interrupted(self, file, *args, **kwargs):
        if str(file).endswith("users.parquet"):  # arrays and items already written
            raise KeyboardInterrupt
        return real_write(self, file, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(reader, PreparationConfig(), cache, "taobao")
    assert _entries(cache) == []  # no folder, no temporary left behind
    monkeypatch.setattr(pl.DataFrame, "write_parquet", real_write)
    data = prepare(reader, PreparationConfig(), cache, "taobao")
    assert reader.reads == 2 and Path(data.stats["cache"]).is_dir()
    prepare(reader, PreparationConfig(), cache, "taobao")
    assert reader.reads == 2


def test_killed_preparation_leftovers_are_ignored_and_cleaned(tmp_path):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO)
    cache = tmp_path / "cache"
    reader = CountingReader(path)
    key = prepared_cache.fingerprint(reader, PreparationConfig())
    # what a kill -9 during the save leaves: a temporary folder with a complete-looking meta.json
    stale = cache / f".taobao-{key}{prepared_cache._TMP_MARK}abc"
    stale.mkdir(parents=True)
    (stale / "meta.json").write_text("{}")
    os.utime(stale, (0, 0))
    data = prepare(reader, PreparationConfig(), cache, "taobao")
    assert reader.reads == 1 and data.stats["cache"].endswith(f"taobao-{key}")
    assert not stale.exists()


def test_damaged_cache_is_rebuilt(tmp_path, caplog):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO)
    cache = tmp_path / "cache"
    reader = CountingReader(path)
    folder = Path(prepare(reader, PreparationConfig(), cache, "taobao").stats["cache"])
    (folder / "arrays.npz").unlink()
    with caplog.at_level(logging.WARNING):
        data = prepare(reader, PreparationConfig(), cache, "taobao")
    assert reader.reads == 2 and "unreadable" in caplog.text
    assert (folder / "arrays.npz").is_file() and data.num_events == 5
    prepare(reader, PreparationConfig(), cache, "taobao")
    assert reader.reads == 2


def test_file_changing_during_the_read_is_not_cached(tmp_path, caplog):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO)
    cache = tmp_path / "cache"

    class ChangingReader(CountingReader):
        def read(self) -> RawDataset:
            raw = super().read()
            path.write_text(TAOBAO_MORE)  # another process rewrites the file meanwhile
            return raw

    with caplog.at_level(logging.WARNING):
        prepare(ChangingReader(path), PreparationConfig(), cache, "taobao")
    assert "changed while it was being read" in caplog.text and _entries(cache) == []


def test_unwritable_cache_only_warns(tmp_path, caplog):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO)
    blocker = write_bytes(tmp_path / "cache", "a file where the cache folder should be")
    with caplog.at_level(logging.WARNING):
        data = prepare(CountingReader(path), PreparationConfig(), blocker / "sub", "taobao")
    assert (
        data.num_events == 5
        and "Cannot write the cache" in caplog.text
        and "paths.cache_dir" in caplog.text
    )


# -- the real ml-100k through the real config --------------------------------------------------------


def _ml100k() -> Path:
    folder = REPO.parent / "shared" / "data" / "ml-100k"
    if not (folder / "ml-100k.inter").is_file():
        pytest.skip(f"real ml-100k RecBole files not found in {folder}")
    return folder


def test_recbole_ml100k_through_the_config(tmp_path):
    from hydra import compose, initialize_config_dir

    from recsys_cli.builders import build_datamodule
    from recsys_cli.config_paths import CONF_DIR

    folder = _ml100k()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["data=recbole", f"data.path={folder}", f"paths.cache_dir={tmp_path}"],
        )
    data = build_datamodule(cfg).load()
    assert (data.num_users, data.num_items, data.num_events) == (943, 1682, 100_000)
    s = data.stats
    assert s["duplicates_dropped"] == 0 and s["users_dropped"] == 0
    assert s["user_table_users"] == 943 and s["catalogue_items"] == 1682
    assert s["time_first"].startswith("1997-09") and s["time_last"].startswith("1998-04")
    assert 0.4 < s["equal_timestamp_share"] < 0.6


def test_recsys_prepare_command_on_ml100k(tmp_path, capsys):
    from recsys_cli.cli import main

    folder = _ml100k()
    main(["prepare", "data=recbole", f"data.path={folder}", f"paths.cache_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert "943" in out and "1682" in out.replace(",", "") and "100000" in out.replace(",", "")
