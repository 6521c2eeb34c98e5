"""Bad inputs recognised from the data itself (continues tests/test_bad_inputs.py): one DataError
line naming what the file or column really is, never a traceback and nothing silently wrong.

* the encoding and the real format, sniffed (byte-order mark, NUL bytes, magic bytes): UTF-16
  text read as UTF-8 or Latin-1 names UTF-16 and the setting that reads it (or how to convert the
  file when the format has no encoding setting), a Parquet or SQLite file given as text
* a truncated .csv.gz read by polars itself
* timestamps whose unit or dates the values contradict: seconds stored where the format has
  milliseconds (all in January 1970), dates in the future, a placeholder 0 among recent events
* what used to be chosen or kept without a word: two MovieLens releases in one folder, a Taobao
  behaviour outside pv / cart / fav / buy, rows dropped by ``invalid_timestamps=drop`` (now in
  the printed statistics)
"""

from __future__ import annotations

import gzip
import re
import sqlite3

import polars as pl
import pytest
from fixtures_formats import (
    AMAZON_2023_REVIEWS,
    COLS,
    ML1M_RATINGS,
    TAOBAO,
    error_of,
    jsonl,
    tabular,
    write_bytes,
    write_ml1m,
    write_ml100k,
)

from recsys_cli.data.formats import AmazonReader, MovieLensReader, TabularReader, TaobaoReader
from recsys_cli.data.prepare import prepare
from recsys_cli.data.prepare_stats import format_stats
from recsys_cli.data.prepared_data import PreparationConfig

LOG = "visitor,sku,ts\nv1,s1,1700000000\nv1,s2,1700000100\nv2,s1,1700000200\n"
ISO_LOG = "visitor,sku,ts\nv1,s1,2024-01-01\nv1,s2,2024-01-02\nv2,s1,2024-01-03\n"
YEAR_3000 = 32503680000

# -- encodings and formats, sniffed ------------------------------------------------------------


def test_utf16_ratings_dat_names_the_encoding_and_how_to_convert(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    (folder / "ratings.dat").write_bytes(ML1M_RATINGS.encode("utf-16"))
    msg = error_of(lambda: MovieLensReader(str(folder)))
    assert f"{folder / 'ratings.dat'}: UTF-16 LE text" in msg and "byte-order mark ff fe" in msg
    assert "iconv -f UTF-16 -t UTF-8 ratings.dat" in msg
    assert "data.reader.encoding" not in msg  # MovieLens has no such setting


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_utf16_csv_names_the_setting_that_reads_it(tmp_path, encoding):
    path, make = tabular(tmp_path, LOG.encode("utf-16"), encoding=encoding)
    msg = error_of(make)
    assert f"{path}: UTF-16 LE text" in msg and "data.reader.encoding=utf-16" in msg
    assert "missing column" not in msg and "latin-1" not in msg
    events = TabularReader(str(path), COLS, encoding="utf-16").read().events
    assert events.get_column("user_id").to_list() == ["v1", "v1", "v2"]


def test_utf16_without_byte_order_mark(tmp_path):
    _, make = tabular(tmp_path, LOG.encode("utf-16-be"))
    msg = error_of(make)
    assert "UTF-16 BE text (no byte-order mark" in msg and "data.reader.encoding=utf-16-be" in msg


def test_utf16_json_lines_must_be_converted(tmp_path):
    path = write_bytes(
        tmp_path / "Beauty.jsonl", jsonl(AMAZON_2023_REVIEWS).decode().encode("utf-16")
    )
    for encoding in ("utf-8", "utf-16"):
        msg = error_of(lambda enc=encoding: AmazonReader(str(path), encoding=enc))
        assert "UTF-16 LE text" in msg and "iconv -f UTF-16 -t UTF-8 Beauty.jsonl" in msg


def test_parquet_file_named_csv(tmp_path):
    path = tmp_path / "log.csv"
    pl.DataFrame({"visitor": ["v"], "sku": ["s"], "ts": [1700000000]}).write_parquet(path)
    msg = error_of(lambda: TabularReader(str(path), COLS))
    assert f"{path}: a Parquet file (it starts with the magic bytes PAR1), not a text file" in msg
    assert "rename it to log.parquet" in msg and "missing column" not in msg


def test_sqlite_database_given_as_taobao_file(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    with sqlite3.connect(path) as db:
        db.execute("create table t (x)")
    msg = error_of(lambda: TaobaoReader(str(path)))
    assert f"{path}: an SQLite database" in msg and "not a text file" in msg


def test_truncated_csv_gz_read_by_polars(tmp_path):
    rows = "".join(f"v{i % 7},s{i % 13},{1700000000 + i}\n" for i in range(5000))
    blob = gzip.compress(("visitor,sku,ts\n" + rows).encode())
    path, make = tabular(tmp_path, blob[: len(blob) // 2], name="log.csv.gz")
    msg = error_of(make)
    assert f"{path}: corrupt or truncated gzip file" in msg


# -- timestamps the data contradicts ----------------------------------------------------------


def test_amazon_2023_seconds_are_not_read_as_milliseconds(tmp_path):
    records = [dict(r, timestamp=r["timestamp"] // 1000) for r in AMAZON_2023_REVIEWS]
    records[2]["timestamp"] = records[0]["timestamp"] - 724 * 86400
    path = write_bytes(tmp_path / "Beauty.jsonl", jsonl(records))
    msg = error_of(lambda: AmazonReader(str(path)))
    assert f"{path}, column 'timestamp': read as milliseconds" in msg
    assert (
        "1970-01-18" in msg and "0.72 days" in msg and "read as seconds they span 724.0 days" in msg
    )
    assert "this format stores milliseconds" in msg


def test_explicit_unit_too_fine_names_the_right_one(tmp_path):
    _, make = tabular(tmp_path, LOG, timestamp_unit="ms")
    msg = error_of(make)
    assert "read as milliseconds" in msg and "data.reader.timestamp_unit=s" in msg


@pytest.mark.parametrize(
    "log", [LOG + f"v2,s3,{YEAR_3000}\n", ISO_LOG + "v2,s3,3000-01-01T00:00:00\n"]
)
def test_tabular_timestamp_in_the_year_3000(tmp_path, log):
    _, make = tabular(tmp_path, log)
    msg = error_of(make)
    assert "line 5, column 'ts'" in msg and "(3000-01-01 00:00:00) is in the future" in msg
    assert "invalid_timestamps=drop" in msg


def test_taobao_timestamp_in_the_year_3000(tmp_path):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO + f"7,8,9,pv,{YEAR_3000}\n")
    msg = error_of(lambda: TaobaoReader(str(path)))
    assert "line 6, column 'timestamp'" in msg and "is in the future" in msg


def test_placeholder_zero_among_recent_events(tmp_path):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO + "7,8,9,pv,0\n")
    msg = error_of(lambda: TaobaoReader(str(path)))
    assert "line 6, column 'timestamp': timestamp 0 (1970-01-01 00:00:00)" in msg
    assert "long before the other events (median 2017-11-" in msg


def test_relative_seconds_stay_allowed(tmp_path):
    """Timestamps that only make sense relative to each other (no unit gives recent dates)."""
    _, make = tabular(tmp_path, "visitor,sku,ts\nv,s,0\nv,t,3600\n", timestamp_unit="s")
    assert make().read().events.height == 2


def test_dropped_timestamps_are_in_the_printed_statistics(tmp_path):
    bad = f"7,8,9,pv,{YEAR_3000}\n1,9,9,pv,-3\n"
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO + bad)
    reader = TaobaoReader(str(path), invalid_timestamps="drop")
    for _ in range(2):  # prepared, then from the cache
        data = prepare(reader, PreparationConfig(), tmp_path / "cache", "taobao")
        assert data.stats["invalid_timestamps_dropped"] == 2 and data.stats["raw_events"] == 5
    assert re.search(r"^rows dropped \(invalid timestamps\) +2$", format_stats(data.stats), re.M)


# -- no more silent choices --------------------------------------------------------------------


def test_folder_with_two_movielens_releases(tmp_path):
    folder = write_ml1m(write_ml100k(tmp_path / "ml"))
    msg = error_of(lambda: MovieLensReader(str(folder)))
    assert "more than one MovieLens release" in msg
    assert "u.data (ml-100k), ratings.dat (ml-1m/10m)" in msg and "data.path" in msg


def test_folder_with_two_movielens_subfolders(tmp_path):
    write_ml100k(tmp_path / "raw" / "ml-100k")
    write_ml1m(tmp_path / "raw" / "ml-1m")
    msg = error_of(lambda: MovieLensReader(str(tmp_path / "raw")))
    assert "ml-100k/u.data (ml-100k), ml-1m/ratings.dat (ml-1m/10m)" in msg


@pytest.mark.parametrize("behaviour", ["click", ""])
def test_taobao_behaviour_outside_the_four(tmp_path, behaviour):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO + f"7,8,9,{behaviour},1511544070\n")
    msg = error_of(lambda: TaobaoReader(str(path)))
    assert (
        f"line 6, column 'behavior_type': behaviour {behaviour!r} is not one of pv, cart, fav, buy"
        in msg
    )


def test_cli_prepare_utf16_ratings_one_line(tmp_path, capsys):
    from recsys_cli.cli import main

    folder = write_ml1m(tmp_path / "ml-1m")
    (folder / "ratings.dat").write_bytes(ML1M_RATINGS.encode("utf-16"))
    with pytest.raises(SystemExit) as info:
        main(
            [
                "prepare",
                "data=movielens",
                f"data.path={folder}",
                f"paths.cache_dir={tmp_path / 'c'}",
            ]
        )
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith(f"error: {folder / 'ratings.dat'}: UTF-16 LE text")
