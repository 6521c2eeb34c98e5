"""Bad input files: every reader fails with one clear DataError line (what, where, what to do),
or the problem is handled, counted and reported (never a traceback, nothing silently lost).

The cases and where they are tested:

* missing file / folder, empty file, header only, archive instead of the file, unreadable file
* wrong separator (headed and headerless files), ragged line, unmatched quote
* missing, misspelled or duplicated column (messages name the expected and found columns)
* unparsable, missing, negative, pre-1970, wrong-unit and ambiguous-unit timestamps (with the row)
* empty / NaN / non-integer ids, non-numeric ratings
* non-UTF-8 text (CSV, JSON lines, RecBole, SASRec text), invalid JSON, truncated gzip
* handled and reported by preparation: duplicate events, users with a single event, items of
  the item table without events (here, through the real readers); the cache being rebuilt when
  an input file changed (touched, rewritten with the same size and mtime, grown), an interrupted
  or killed preparation never leaving a cache that is taken as valid, a damaged cache, a file
  changing during the read: tests/test_prepare.py (test_cache_*, test_interrupted_*,
  test_killed_*, test_damaged_*, test_file_changing_*)
* the CLI prints the one line with ``error:`` and exits with status 2 (no traceback)
* recognised from the data itself (sniffed encodings and formats, timestamps whose unit or dates
  the values contradict, two MovieLens releases in a folder, unknown Taobao behaviours, dropped
  rows in the statistics): tests/test_sniffed_inputs.py
"""

from __future__ import annotations

import gzip
import hashlib
import os

import polars as pl
import pytest
from fixtures_formats import (
    AMAZON_2018_CSV,
    AMAZON_2018_META,
    AMAZON_2023_REVIEWS,
    COLS,
    ML1M_MOVIES,
    RETAILROCKET,
    TAOBAO,
    error_of,
    jsonl,
    tabular,
    write_bytes,
    write_gz,
    write_ml1m,
    write_ml20m,
    write_ml100k,
    write_recbole,
)

from recsys_cli.data.formats import (
    AmazonReader,
    MovieLensReader,
    RecBoleReader,
    RetailrocketReader,
    SequenceTextReader,
    TabularReader,
    TaobaoReader,
)
from recsys_cli.data.prepare import prepare
from recsys_cli.data.prepared_data import PreparationConfig
from recsys_cli.errors import ConfigError

# -- files and folders -------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    msg = error_of(lambda: TaobaoReader(str(path)))
    assert "file not found" in msg and str(path) in msg
    assert "UserBehavior.csv" in msg and "tianchi.aliyun.com" in msg


def test_missing_folder(tmp_path):
    folder = tmp_path / "raw" / "ml-1m"
    msg = error_of(lambda: MovieLensReader(str(folder)))
    assert "folder not found" in msg and str(folder) in msg
    assert "ratings.dat" in msg and "u.data" in msg and "data.path" in msg


def test_folder_without_movielens_files(tmp_path):
    write_bytes(tmp_path / "notes.txt", "hello")
    msg = error_of(lambda: MovieLensReader(str(tmp_path)))
    assert "no MovieLens ratings file" in msg and "notes.txt" in msg and "grouplens.org" in msg


def test_missing_retailrocket_events_in_folder(tmp_path):
    write_bytes(tmp_path / "category_tree.csv", "categoryid,parentid\n1,2\n")
    msg = error_of(lambda: RetailrocketReader(str(tmp_path)))
    assert f"file not found: {tmp_path / 'events.csv'}" in msg and "category_tree.csv" in msg


def test_empty_file(tmp_path):
    path = write_bytes(tmp_path / "UserBehavior.csv", "")
    msg = error_of(lambda: TaobaoReader(str(path)))
    assert str(path) in msg and "empty" in msg


def test_header_only(tmp_path):
    write_bytes(tmp_path / "events.csv", "timestamp,visitorid,event,itemid,transactionid\n")
    msg = error_of(lambda: RetailrocketReader(str(tmp_path)))
    assert "events.csv" in msg and "header but no data rows" in msg


def test_empty_json_lines(tmp_path):
    path = write_gz(tmp_path / "Books.json.gz", b"\n\n")
    msg = error_of(lambda: AmazonReader(str(path)))
    assert str(path) in msg and "no JSON lines" in msg


# -- columns and separators --------------------------------------------------------------------


def test_wrong_separator_with_header(tmp_path):
    write_bytes(tmp_path / "events.csv", RETAILROCKET.replace(",", ";"))
    msg = error_of(lambda: RetailrocketReader(str(tmp_path)))
    assert "wrong separator?" in msg and "comma ','" in msg and "semicolon ';'" in msg
    assert "events.csv" in msg


def test_wrong_separator_headerless(tmp_path):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO.replace(",", "\t"))
    msg = error_of(lambda: TaobaoReader(str(path)))
    assert "line 1: 1 field(s) when split on comma ','" in msg
    assert "wrong separator?" in msg and "tab" in msg and "5" in msg


def test_wrong_separator_tabular(tmp_path):
    _, make = tabular(tmp_path, "visitor;sku;ts\nv;s;1700000000\n")
    msg = error_of(make)
    assert "wrong separator?" in msg and "set the separator to ';'" in msg


def test_missing_column(tmp_path):
    text = "timestamp,visitorid,event,transactionid\n1433221332117,257597,view,\n"
    write_bytes(tmp_path / "events.csv", text)
    msg = error_of(lambda: RetailrocketReader(str(tmp_path)))
    assert "missing column(s) 'itemid'" in msg
    assert "expected columns 'timestamp', 'visitorid', 'event', 'itemid', 'transactionid'" in msg
    assert "found 'timestamp', 'visitorid', 'event', 'transactionid'" in msg


def test_misspelled_column(tmp_path):
    _, make = tabular(tmp_path, "visitor_id,sku,ts\nv1,s1,1700000000\n")
    msg = error_of(make)
    assert "missing column(s) 'visitor'" in msg
    assert (
        "expected columns 'visitor', 'sku', 'ts'" in msg
        and "found 'visitor_id', 'sku', 'ts'" in msg
    )
    assert "did you mean 'visitor_id' for 'visitor'?" in msg and "data.columns" in msg


def test_movielens_csv_wrong_header(tmp_path):
    folder = write_ml20m(tmp_path / "ml-20m")
    write_bytes(folder / "ratings.csv", "user,movie,rating,timestamp\n1,2,3.5,1112486027\n")
    msg = error_of(lambda: MovieLensReader(str(folder)))
    assert (
        "missing column(s) 'userId', 'movieId'" in msg
        and "found 'user', 'movie', 'rating', 'timestamp'" in msg
    )


def test_ratings_dat_wrong_column_count(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    write_bytes(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3\n")
    msg = error_of(lambda: MovieLensReader(str(folder)))
    assert "ratings.dat line 2: 3 field(s) separated by '::', expected 4" in msg
    assert "UserID::MovieID::Rating::Timestamp" in msg


def test_ratings_dat_too_many_fields(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    write_bytes(
        folder / "ratings.dat", "1::1193::5::978300760\n1::1193::5::978300760\n2::3::4::5::6\n"
    )
    msg = error_of(lambda: MovieLensReader(str(folder)))
    assert "ratings.dat line 3: 5 field(s)" in msg


def test_ratings_dat_wrong_separator(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    write_bytes(folder / "ratings.dat", "1\t1193\t5\t978300760\n")
    msg = error_of(lambda: MovieLensReader(str(folder)))
    assert "line 1: 1 field(s)" in msg and "wrong separator?" in msg and "'::'" in msg


def test_movies_dat_bad_line(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    write_bytes(folder / "movies.dat", ML1M_MOVIES + "9999|Broken (2000)|Drama\n", "latin-1")
    msg = error_of(lambda: MovieLensReader(str(folder)))
    assert "movies.dat line 5: expected MovieID::Title::Genres" in msg


def test_u_item_wrong_field_count(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    write_bytes(folder / "u.item", "1|Toy Story (1995)|01-Jan-1995\n")
    msg = error_of(lambda: MovieLensReader(str(folder)))
    assert "u.item" in msg and "expected 24" in msg


def test_sequence_text_three_columns(tmp_path):
    path = write_bytes(tmp_path / "ml-1m.txt", "1 1 5\n1 2 3\n")
    msg = error_of(lambda: SequenceTextReader(str(path)))
    assert "line 1: 3 field(s) when split on space" in msg and "user, item" in msg


def test_ragged_line_in_csv(tmp_path):
    _, make = tabular(tmp_path, "visitor,sku,ts\nv1,s1,1700000000\nv2,s2,1700000001,extra\n")
    msg = error_of(make)
    assert "line 3: 4 fields separated by comma ','" in msg and "expected 3" in msg


# -- values ------------------------------------------------------------------------------------


def test_unparsable_timestamp(tmp_path):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO + "7,8,9,pv,yesterday\n")
    msg = error_of(lambda: TaobaoReader(str(path)))
    assert f"{path} line 6, column 'timestamp'" in msg
    assert "unparsable timestamp 'yesterday'" in msg and "seconds" in msg
    assert "invalid_timestamps=drop" in msg


def test_unparsable_iso_timestamp(tmp_path):
    _, make = tabular(tmp_path, "visitor,sku,ts\nv,s,2024-01-01T10:00:00\nv,s,31/02/2024 noon\n")
    msg = error_of(make)
    assert "line 3, column 'ts'" in msg and "'31/02/2024 noon'" in msg and "ISO" in msg


def test_missing_timestamp(tmp_path):
    write_bytes(tmp_path / "events.csv", RETAILROCKET + ",1,view,2,\n")
    msg = error_of(lambda: RetailrocketReader(str(tmp_path)))
    assert "line 6, column 'timestamp': missing timestamp" in msg


def test_negative_timestamp(tmp_path):
    bad = RETAILROCKET.replace("1433224214164", "-1433224214164")
    write_bytes(tmp_path / "events.csv", bad)
    msg = error_of(lambda: RetailrocketReader(str(tmp_path)))
    assert "events.csv line 3, column 'timestamp'" in msg
    assert "negative timestamp -1433224214164" in msg


def test_timestamp_in_wrong_unit(tmp_path):
    path = write_bytes(tmp_path / "Books.csv", "0001713353,A1,5.0,1123804800000\n")
    msg = error_of(lambda: AmazonReader(str(path)))
    assert "line 1" in msg and "after the year 5000" in msg and "seconds" in msg


def test_ambiguous_timestamp_unit(tmp_path):
    _, make = tabular(tmp_path, "visitor,sku,ts\nv,s,0\nv,s,3600\nv,s,86400\n")
    msg = error_of(make)
    assert "cannot tell the unit" in msg and "column 'ts'" in msg and "min 0, max 86400" in msg
    assert "data.reader.timestamp_unit=s" in msg and "data.reader.timestamp_unit=ms" in msg


def test_empty_user_id(tmp_path):
    _, make = tabular(tmp_path, "visitor,sku,ts\nv1,s1,1700000000\n,s2,1700000001\n")
    msg = error_of(make)
    assert "log.csv line 3, column 'visitor': user id is empty" in msg and "fix or remove" in msg


def test_nan_user_id_text(tmp_path):
    _, make = tabular(
        tmp_path, "visitor,sku,ts\nv1,s1,1700000000\nv1,s1,1700000000\nNaN,s2,1700000001\n"
    )
    msg = error_of(make)
    assert "line 4, column 'visitor': user id is 'NaN'" in msg


def test_nan_item_id_parquet(tmp_path):
    path = tmp_path / "log.parquet"
    pl.DataFrame(
        {"visitor": [1, 2, 3], "sku": [1.0, float("nan"), 3.0], "ts": [1700000000] * 3}
    ).write_parquet(path)
    msg = error_of(lambda: TabularReader(str(path), COLS))
    assert "log.parquet row 2, column 'sku': item id is nan" in msg


def test_empty_item_id_taobao(tmp_path):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO + "7,,9,pv,1511544070\n")
    msg = error_of(lambda: TaobaoReader(str(path)))
    assert "line 6, column 'item_id': item id is empty" in msg


def test_non_integer_movielens_id(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    write_bytes(folder / "u.data", "196\t242\t3\t881250949\nabc\t302\t3\t891717742\n")
    msg = error_of(lambda: MovieLensReader(str(folder)))
    assert "u.data line 2, column 'user': user id 'abc' is not an integer" in msg


def test_bad_rating(tmp_path):
    folder = write_ml20m(tmp_path / "ml-20m")
    write_bytes(
        folder / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,3,great,1112486027\n",
    )
    msg = error_of(lambda: MovieLensReader(str(folder)))
    assert "ratings.csv line 3, column 'rating': rating 'great' is not a number" in msg


# -- encodings ---------------------------------------------------------------------------------


def test_non_utf8_text(tmp_path):
    path, make = tabular(tmp_path, "visitor,sku,ts\nv1,caf\xe9,1700000000\n".encode("latin-1"))
    msg = error_of(make)
    assert f"{path}: not valid UTF-8 text (byte 0xe9 on line 2)" in msg
    assert "data.reader.encoding=latin-1" in msg


def test_non_utf8_taobao(tmp_path):
    path = write_bytes(
        tmp_path / "UserBehavior.csv", TAOBAO.encode() + b"1,2,3,p\xe4v,1511544070\n"
    )
    msg = error_of(lambda: TaobaoReader(str(path)))
    assert "not valid UTF-8" in msg and "line 6" in msg and "encoding" in msg


def test_non_utf8_json(tmp_path):
    path = write_bytes(
        tmp_path / "r.jsonl", jsonl(AMAZON_2023_REVIEWS[:1]) + b'{"user_id": "\xe9"}\n'
    )
    msg = error_of(lambda: AmazonReader(str(path)))
    assert "line 2" in msg and "UTF-8" in msg


def test_unknown_encoding_name(tmp_path):
    with pytest.raises(ConfigError, match="not a known text encoding"):
        TaobaoReader(str(tmp_path), encoding="latin-99")


# -- JSON --------------------------------------------------------------------------------------


def test_bad_json_line(tmp_path):
    data = (
        jsonl(AMAZON_2023_REVIEWS[:2])
        + b'{"rating": 5.0, "user_id": "A", \n'
        + jsonl(AMAZON_2023_REVIEWS[:1])
    )
    path = write_gz(tmp_path / "Beauty.jsonl.gz", data)
    msg = error_of(lambda: AmazonReader(str(path)))
    assert f"{path} line 3: invalid JSON" in msg and "fix or remove that line" in msg


def test_json_wrong_field_type(tmp_path):
    records = [dict(r) for r in AMAZON_2023_REVIEWS]
    records[1]["rating"] = "five"
    path = write_bytes(tmp_path / "Beauty.jsonl", jsonl(records))
    msg = error_of(lambda: AmazonReader(str(path)))
    assert "line 2: field 'rating' is 'five' (str), expected Float64" in msg


def test_json_2014_python_literals(tmp_path):
    path = write_gz(tmp_path / "reviews_Books_5.json.gz", b"{'reviewerID': 'A1', 'asin': '0001'}\n")
    msg = error_of(lambda: AmazonReader(str(path)))
    assert "line 1: invalid JSON" in msg and "2014" in msg


def test_metadata_given_as_reviews(tmp_path):
    path = write_bytes(tmp_path / "meta_Books.jsonl", jsonl(AMAZON_2018_META))
    msg = error_of(lambda: AmazonReader(str(path)))
    assert "not an Amazon review record" in msg and "metadata_path" in msg and "reviewerID" in msg


def test_truncated_gzip(tmp_path):
    blob = gzip.compress(jsonl(AMAZON_2023_REVIEWS * 50))
    path = write_bytes(tmp_path / "Beauty.jsonl.gz", blob[: len(blob) // 2])
    msg = error_of(lambda: AmazonReader(str(path)))
    assert "corrupt or truncated gzip" in msg and str(path) in msg


def test_missing_user_in_json(tmp_path):
    records = [dict(r) for r in AMAZON_2023_REVIEWS]
    del records[2]["user_id"]
    path = write_bytes(tmp_path / "Beauty.jsonl", jsonl(records))
    msg = error_of(lambda: AmazonReader(str(path)))
    assert "line 3, column 'user_id': user id is empty" in msg


# -- RecBole -----------------------------------------------------------------------------------


def test_recbole_header_without_types(tmp_path):
    write_bytes(tmp_path / "toy.inter", "user_id\titem_id\ttimestamp\n1\t2\t3\n")
    msg = error_of(lambda: RecBoleReader(str(tmp_path), dataset="toy"))
    assert "toy.inter line 1: header field 'user_id' has no ':type' suffix" in msg


def test_recbole_missing_user_field(tmp_path):
    write_bytes(tmp_path / "toy.inter", "uid:token\titem_id:token\n1\t2\n")
    msg = error_of(lambda: RecBoleReader(str(tmp_path), dataset="toy"))
    assert (
        "missing field(s) user_id" in msg
        and "found 'uid', 'item_id'" in msg
        and "user_field" in msg
    )


def test_recbole_unknown_dataset_name(tmp_path):
    write_recbole(tmp_path, "a")
    write_recbole(tmp_path, "b")
    msg = error_of(lambda: RecBoleReader(str(tmp_path)))
    assert "'a.inter', 'b.inter'" in msg and "data.reader.dataset" in msg


def test_recbole_wrong_separator(tmp_path):
    write_bytes(tmp_path / "toy.inter", "user_id:token item_id:token\n1 2\n")
    msg = error_of(lambda: RecBoleReader(str(tmp_path)))
    assert "wrong separator?" in msg and "tab-separated" in msg


def test_recbole_bad_float_timestamp(tmp_path):
    write_bytes(
        tmp_path / "toy.inter",
        "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t88125.0\n1\t3\tsoon\n",
    )
    msg = error_of(lambda: RecBoleReader(str(tmp_path)))
    assert "toy.inter line 3, column 'timestamp': unparsable timestamp 'soon'" in msg


# -- config values -----------------------------------------------------------------------------


def test_tabular_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"data.columns.usr: unknown key"):
        TabularReader(str(tmp_path / "x.csv"), {"usr": "a", "item": "b"})
    with pytest.raises(ConfigError, match=r"data.columns needs user"):
        TabularReader(str(tmp_path / "x.csv"), {"item": "b"})
    with pytest.raises(ConfigError, match=r"timestamp_unit='minutes' is not one of auto, s, ms"):
        TabularReader(str(tmp_path / "x.csv"), COLS, timestamp_unit="minutes")
    with pytest.raises(ConfigError, match="one character"):
        TabularReader(str(tmp_path / "x.csv"), COLS, separator="::")


def test_not_a_parquet_file(tmp_path):
    path = write_bytes(tmp_path / "log.parquet", "visitor,sku,ts\n1,2,3\n")
    msg = error_of(lambda: TabularReader(str(path), COLS))
    assert "cannot read it as Parquet" in msg and str(path) in msg


def test_explicit_unit_mismatch(tmp_path):
    _, make = tabular(tmp_path, "visitor,sku,ts\nv,s,1700000000123\n", timestamp_unit="s")
    msg = error_of(make)
    assert "after the year 5000" in msg and "data.reader.timestamp_unit" in msg


# -- readers only read -------------------------------------------------------------------------


def _snapshot(folder):
    return {
        p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_reading_leaves_raw_files_untouched(tmp_path):
    write_ml1m(tmp_path / "ml-1m")
    write_ml100k(tmp_path / "ml-100k")
    write_recbole(tmp_path / "toy")
    write_bytes(tmp_path / "rr" / "events.csv", RETAILROCKET)
    write_bytes(tmp_path / "tb" / "UserBehavior.csv", TAOBAO)
    write_bytes(tmp_path / "amz" / "Books.csv", AMAZON_2018_CSV)
    write_gz(tmp_path / "amz2" / "Beauty.jsonl.gz", jsonl(AMAZON_2023_REVIEWS))
    write_bytes(tmp_path / "log.csv", "visitor,sku,ts\nv,s,1700000000\n", "latin-1")
    for p in tmp_path.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    before = _snapshot(tmp_path)
    readers = [
        MovieLensReader(str(tmp_path / "ml-1m")),
        MovieLensReader(str(tmp_path / "ml-100k")),
        RecBoleReader(str(tmp_path / "toy")),
        RetailrocketReader(str(tmp_path / "rr")),
        TaobaoReader(str(tmp_path / "tb")),
        AmazonReader(str(tmp_path / "amz" / "Books.csv")),
        AmazonReader(str(tmp_path / "amz2")),
        TabularReader(str(tmp_path / "log.csv"), COLS, encoding="latin-1"),
    ]
    for reader in readers:
        reader.fingerprint()
        assert reader.read().events.height > 0
    assert _snapshot(tmp_path) == before  # same files, bytes and mtimes; nothing new written


# -- more files and columns ------------------------------------------------------------------------

EMPTY_CASES = {
    "ml-100k u.data": lambda d: (write_bytes(d / "u.data", ""), lambda: MovieLensReader(str(d))),
    "ml-1m ratings.dat": lambda d: (
        write_bytes(d / "ratings.dat", ""),
        lambda: MovieLensReader(str(d)),
    ),
    "ml-20m ratings.csv": lambda d: (
        write_bytes(d / "ratings.csv", ""),
        lambda: MovieLensReader(str(d)),
    ),
    "amazon csv": lambda d: (
        write_bytes(d / "Books.csv", ""),
        lambda: AmazonReader(str(d / "Books.csv")),
    ),
    "recbole inter": lambda d: (write_bytes(d / "toy.inter", ""), lambda: RecBoleReader(str(d))),
    "sasrec text": lambda d: (
        write_bytes(d / "ml-1m.txt", ""),
        lambda: SequenceTextReader(str(d / "ml-1m.txt")),
    ),
    "retailrocket": lambda d: (
        write_bytes(d / "events.csv", ""),
        lambda: RetailrocketReader(str(d)),
    ),
    "parquet": lambda d: (
        write_bytes(d / "log.parquet", ""),
        lambda: TabularReader(str(d / "log.parquet"), COLS),
    ),
}


@pytest.mark.parametrize("case", sorted(EMPTY_CASES))
def test_empty_file_every_reader(tmp_path, case):
    path, make = EMPTY_CASES[case](tmp_path)
    msg = error_of(make)
    assert f"{path} is empty (0 bytes)" in msg and "re-download or re-export" in msg


def test_zip_archive_instead_of_the_file(tmp_path):
    path, make = tabular(tmp_path, b"PK\x03\x04" + bytes(200), name="log.csv")
    msg = error_of(make)
    assert f"{path} is a zip archive" in msg and "extract it first" in msg


def test_movielens_folder_with_only_the_zip(tmp_path):
    write_bytes(tmp_path / "ml-1m.zip", b"PK\x03\x04" + bytes(100))
    msg = error_of(lambda: MovieLensReader(str(tmp_path)))
    assert "no MovieLens ratings file" in msg and "unzip ml-1m.zip in this folder" in msg


def test_unreadable_file(tmp_path, monkeypatch):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO)
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if str(p) == str(path) else real_access(p, mode)
    )
    msg = error_of(lambda: TaobaoReader(str(path)))
    assert f"{path} is not readable (permission denied)" in msg


def test_duplicated_column_in_header(tmp_path):
    _, make = tabular(tmp_path, "visitor,sku,ts,sku\nv1,s1,1700000000,s2\n")
    msg = error_of(make)
    assert "line 1: column 'sku' appears more than once in the header" in msg


def test_unmatched_quote(tmp_path):
    _, make = tabular(
        tmp_path, 'visitor,sku,ts\nv1,s1,1700000000\nv1,"s2,1700000001\nv2,s3,1700000002\n'
    )
    msg = error_of(make)
    assert 'line 3: unmatched "' in msg and "close or remove the quote" in msg


def test_placeholder_date_before_1970(tmp_path):
    _, make = tabular(tmp_path, "visitor,sku,ts\nv,s,2024-01-01\nv,s,1900-01-01\n")
    msg = error_of(make)
    assert "line 3, column 'ts': timestamp '1900-01-01' is before 1970" in msg
    assert "invalid_timestamps=drop" in msg


def test_negative_timestamp_taobao(tmp_path):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO + "7,8,9,pv,-5\n")
    msg = error_of(lambda: TaobaoReader(str(path)))
    assert "line 6, column 'timestamp': negative timestamp -5 (before 1970)" in msg


def test_unparsable_timestamp_movielens(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    write_bytes(folder / "u.data", "196\t242\t3\t881250949\n186\t302\t3\tnever\n")
    msg = error_of(lambda: MovieLensReader(str(folder)))
    assert "u.data line 2, column 'timestamp': unparsable timestamp 'never'" in msg


def test_amazon_folder_with_two_review_files(tmp_path):
    write_bytes(tmp_path / "Books.csv", AMAZON_2018_CSV)
    write_bytes(tmp_path / "Music.csv", AMAZON_2018_CSV)
    msg = error_of(lambda: AmazonReader(str(tmp_path)))
    assert "expected exactly one review file" in msg and "'Books.csv', 'Music.csv'" in msg


def test_sasrec_folder_with_two_text_files(tmp_path):
    write_bytes(tmp_path / "a.txt", "1 1\n")
    write_bytes(tmp_path / "b.txt", "1 1\n")
    msg = error_of(lambda: SequenceTextReader(str(tmp_path)))
    assert "expected exactly one .txt file" in msg and "'a.txt', 'b.txt'" in msg


def test_non_utf8_recbole_item_file_names_the_option(tmp_path):
    folder = write_recbole(tmp_path / "toy")
    write_bytes(
        folder / "toy.item", "item_id:token\tmovie_title:token_seq\n1\tCaf\xe9\n", "latin-1"
    )
    msg = error_of(lambda: RecBoleReader(str(folder)))
    assert "toy.item" in msg and "not valid UTF-8" in msg and "data.reader.encoding=latin-1" in msg
    items = RecBoleReader(str(folder), encoding="latin-1").read().items
    assert items.get_column("title").to_list() == ["Café"]


def test_non_utf8_sasrec_text(tmp_path):
    path = write_bytes(tmp_path / "x.txt", b"u1 caf\xe9\nu1 b\n")
    msg = error_of(lambda: SequenceTextReader(str(path)))
    assert "not valid UTF-8" in msg and "line 1" in msg


# -- handled, counted and reported -------------------------------------------------------------------


def test_duplicates_and_single_event_users_are_dropped_and_reported(tmp_path, caplog):
    duplicated = TAOBAO + TAOBAO.splitlines(keepends=True)[0] + "555,1,2,pv,1511544070\n"
    path = write_bytes(tmp_path / "UserBehavior.csv", duplicated)
    with caplog.at_level("WARNING"):
        data = prepare(TaobaoReader(str(path)), PreparationConfig(), tmp_path / "cache", "taobao")
    s = data.stats
    assert s["raw_events"] == 7 and s["duplicates_dropped"] == 1
    assert s["users_dropped"] == 1 and s["single_event_users"] == 1  # user 555
    assert data.num_events == 5 and data.num_users == 2
    assert "dropped 1 duplicate events" in caplog.text and "1 had a single event" in caplog.text


def test_item_table_items_without_events_are_reported(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    write_bytes(
        folder / "u.data",
        "196\t242\t3\t881250949\n196\t1\t5\t881250950\n186\t302\t3\t891717742\n186\t1\t1\t891717743\n",
    )
    data = prepare(MovieLensReader(str(folder)), PreparationConfig(), None, "movielens")
    # u.item lists 1, 242, 302 and 1633; nobody rated 1633
    assert data.stats["catalogue_items"] == 4 and data.stats["catalogue_items_without_events"] == 1
    assert data.item_titles == ["Toy Story (1995)", "Kolya (1996)", "L.A. Confidential (1997)"]


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    from recsys_cli.cli import main

    missing = tmp_path / "nowhere" / "UserBehavior.csv"
    with pytest.raises(SystemExit) as info:
        main(
            [
                "prepare",
                "data=taobao",
                f"data.path={missing}",
                f"paths.cache_dir={tmp_path / 'cache'}",
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: file not found:") and str(missing) in err
    assert "\n" not in err and "Traceback" not in err
