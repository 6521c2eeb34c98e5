"""Every dataset reader on small files written in the exact format of the public releases."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from conftest import REPO
from fixtures_formats import (
    AMAZON_2018_CSV,
    AMAZON_2018_META,
    AMAZON_2018_REVIEWS,
    AMAZON_2023_META,
    AMAZON_2023_REVIEWS,
    RETAILROCKET,
    SASREC_TEXT,
    TAOBAO,
    jsonl,
    write_bytes,
    write_gz,
    write_ml1m,
    write_ml10m,
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
from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.data.formats.canonical import json_lines as C

UTC = pl.Datetime("us", "UTC")


def ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def check_canonical(raw: RawDataset, *, has_time: bool = True) -> pl.DataFrame:
    ev = raw.events
    assert isinstance(raw, RawDataset)
    assert ev.columns[:2] == ["user_id", "item_id"]
    assert ev.height > 0
    assert raw.has_time is has_time
    if has_time:
        assert ev.schema["timestamp"] == UTC
    for col, dtype in (("event_type", pl.String), ("category", pl.String), ("rating", pl.Float64)):
        if col in ev.columns:
            assert ev.schema[col] == dtype, col
    for col in ("user_id", "item_id"):
        assert ev.get_column(col).null_count() == 0
    if raw.items is not None:
        assert raw.items.columns[0] == "item_id"
        assert raw.items.get_column("item_id").is_unique().all()
        assert raw.items.schema["item_id"] == ev.schema["item_id"]
    assert raw.source_files and all(Path(p).is_file() for p in raw.source_files)
    return ev


# -- MovieLens ---------------------------------------------------------------------------------


def test_movielens_100k(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    reader = MovieLensReader(str(folder))
    raw = reader.read()
    ev = check_canonical(raw)
    assert ev.select("user_id", "item_id").rows() == [(196, 242), (186, 302), (196, 1)]
    assert ev.schema["user_id"] == pl.Int64
    assert ev.get_column("rating").to_list() == [3.0, 3.0, 5.0]
    assert ev.get_column("timestamp")[0] == ts(881250949)
    assert ev.get_column("category").to_list() == ["Comedy", "Crime", "Animation"]
    items = raw.items.sort("item_id")
    assert items.get_column("item_id").to_list() == [1, 242, 302, 1633]
    assert items.row(0, named=True)["title"] == "Toy Story (1995)"
    assert items.row(0, named=True)["genres"] == "Animation|Children's|Comedy"
    # Latin-1 title decoded correctly
    assert items.row(3, named=True)["title"] == "Á köldum klaka (Cold Fever) (1994)"
    assert items.get_column("category").to_list() == ["Animation", "Comedy", "Crime", "Comedy"]
    assert reader.source_files() == [folder / "u.data", folder / "u.item"]


def test_movielens_1m_latin1_movies(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    raw = MovieLensReader(str(folder)).read()
    ev = check_canonical(raw)
    assert ev.height == 4
    assert ev.row(0, named=True) == {
        "user_id": 1,
        "item_id": 1193,
        "timestamp": ts(978300760),
        "category": "Drama",
        "rating": 5.0,
    }
    titles = dict(raw.items.select("item_id", "title").rows())
    assert titles[2808] == "Misérables, Les (1998)"
    assert titles[661] == "James and the Giant Peach (1996)"
    genres = dict(raw.items.select("item_id", "genres").rows())
    assert genres[661] == "Animation|Children's|Musical"
    assert ev.get_column("category").to_list() == ["Drama", "Animation", "Drama", "Comedy"]


def test_movielens_10m_half_stars_utf8_movies(tmp_path):
    folder = write_ml10m(tmp_path / "ml-10M100K")
    raw = MovieLensReader(str(folder)).read()
    ev = check_canonical(raw)
    assert ev.get_column("rating").to_list() == [5.0, 4.5, 0.5]
    assert dict(raw.items.select("item_id", "title").rows())[185] == "Net, The (1995)"


def test_movielens_20m_csv_quoted_titles(tmp_path):
    folder = write_ml20m(tmp_path / "ml-20m")
    raw = MovieLensReader(str(folder)).read()
    ev = check_canonical(raw)
    assert ev.height == 4
    assert ev.get_column("timestamp").to_list()[2] == ts(974820889)
    items = {r["item_id"]: r for r in raw.items.iter_rows(named=True)}
    assert items[11]["title"] == "American President, The (1995)"
    assert items[29]["title"].startswith("City of Lost Children, The (Cité")
    assert items[29]["category"] == "Adventure"
    assert items[131262]["category"] is None  # "(no genres listed)"
    assert ev.get_column("category").to_list() == ["Adventure", "Adventure", "Comedy", None]


def test_movielens_finds_unzipped_subfolder(tmp_path):
    write_ml1m(tmp_path / "ml-1m")
    raw = MovieLensReader(str(tmp_path)).read()
    assert raw.events.height == 4


def test_movielens_without_movie_list(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    (folder / "movies.dat").unlink()
    raw = MovieLensReader(str(folder)).read()
    assert raw.items is None and "category" not in raw.events.columns
    assert raw.events.height == 4


# -- Amazon ------------------------------------------------------------------------------------


def test_amazon_2018_ratings_csv(tmp_path):
    path = write_bytes(tmp_path / "Books.csv", AMAZON_2018_CSV)
    raw = AmazonReader(str(path)).read()
    ev = check_canonical(raw)
    assert ev.schema["item_id"] == pl.String
    assert ev.get_column("item_id").to_list() == ["0001713353", "0001713353", "B00000JBLH"]
    assert ev.get_column("user_id")[0] == "A1C6M8LCIX4M6M"
    assert ev.get_column("timestamp")[0] == ts(1123804800)
    assert ev.get_column("rating").to_list() == [5.0, 5.0, 3.0]


def test_amazon_2023_ratings_csv_with_header_ms(tmp_path):
    text = "user_id,parent_asin,rating,timestamp\nAGKH,B00YQ6X8EO,5.0,1588687728923\nAGKH,B08BBQ29N5,4.0,1588615855070\n"
    path = write_bytes(tmp_path / "All_Beauty.train.csv", text)
    ev = check_canonical(AmazonReader(str(path)).read())
    assert ev.get_column("timestamp")[0] == datetime(
        2020, 5, 5, 14, 8, 48, 923000, tzinfo=timezone.utc
    )


def test_amazon_2018_json_gz_with_metadata(tmp_path):
    reviews = write_gz(tmp_path / "Books_5.json.gz", jsonl(AMAZON_2018_REVIEWS))
    meta = write_gz(tmp_path / "meta_Books.json.gz", jsonl(AMAZON_2018_META))
    reader = AmazonReader(str(reviews), metadata_path=str(meta))
    raw = reader.read()
    ev = check_canonical(raw)
    assert ev.select("user_id", "item_id").rows() == [
        ("A1C6M8LCIX4M6M", "0001713353"),
        ("A2ZZ", "B00000JBLH"),
        ("A1C6M8LCIX4M6M", "B00000JBLH"),
    ]
    assert ev.get_column("timestamp")[0] == ts(1441065600)
    assert ev.get_column("rating").to_list() == [5.0, 4.0, 1.0]
    assert ev.get_column("verified").to_list() == [True, False, True]
    items = {r["item_id"]: r for r in raw.items.iter_rows(named=True)}
    assert items["0001713353"]["title"] == "The Book"
    assert items["0001713353"]["category"] == "Books"
    assert items["B00000JBLH"]["category"] is None  # empty main_cat and empty list
    assert ev.get_column("category").to_list() == ["Books", None, None]
    assert reader.source_files() == [reviews, meta]


def test_amazon_2023_jsonl_parent_asin_and_ms(tmp_path):
    reviews = write_bytes(tmp_path / "All_Beauty.jsonl", jsonl(AMAZON_2023_REVIEWS))
    meta = write_bytes(tmp_path / "meta_All_Beauty.jsonl", jsonl(AMAZON_2023_META))
    raw = AmazonReader(str(reviews), metadata_path=str(meta)).read()
    ev = check_canonical(raw)
    # parent_asin when present, else asin
    assert ev.get_column("item_id").to_list() == ["B00YQ6X8EO", "B08BBQ29N5", "B0000000XX"]
    assert ev.get_column("timestamp")[2] == datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert ev.get_column("timestamp")[0] == datetime(
        2020, 5, 5, 14, 8, 48, 923000, tzinfo=timezone.utc
    )
    items = {r["item_id"]: r for r in raw.items.iter_rows(named=True)}
    assert items["B00YQ6X8EO"]["category"] == "All Beauty"
    assert items["B08BBQ29N5"]["category"] == "Beauty & Personal Care"  # main_category null
    assert items["B08BBQ29N5"]["categories"] == "Beauty & Personal Care|Foot, Hand & Nail Care"
    assert items["B00YQ6X8EO"]["title"].startswith("Howard LC0008")
    assert ev.get_column("category").to_list() == ["All Beauty", "Beauty & Personal Care", None]


def test_amazon_folder_picks_reviews_and_metadata(tmp_path):
    write_gz(tmp_path / "All_Beauty.jsonl.gz", jsonl(AMAZON_2023_REVIEWS))
    write_gz(tmp_path / "meta_All_Beauty.jsonl.gz", jsonl(AMAZON_2023_META))
    raw = AmazonReader(str(tmp_path)).read()
    assert raw.events.height == 3 and raw.items is not None and raw.items.height == 2


def test_amazon_json_chunks_keep_line_numbers(tmp_path, monkeypatch):
    """Chunked parsing of a big file reads every line, and errors still name the right line."""
    records = AMAZON_2023_REVIEWS * 40
    path = write_gz(tmp_path / "big.jsonl.gz", jsonl(records))
    monkeypatch.setattr(C, "NDJSON_CHUNK_BYTES", 1000)
    assert AmazonReader(str(path)).read().events.height == 120
    bad = [dict(r) for r in records]
    bad[100]["user_id"] = None
    path = write_gz(tmp_path / "bad.jsonl.gz", jsonl(bad))
    with pytest.raises(C.DataError, match=r"line 101\b.*user id is empty"):
        AmazonReader(str(path)).read()


# -- Taobao, Retailrocket ----------------------------------------------------------------------


def test_taobao(tmp_path):
    path = write_bytes(tmp_path / "taobao" / "UserBehavior.csv", TAOBAO)
    raw = TaobaoReader(str(path.parent)).read()
    ev = check_canonical(raw)
    assert ev.height == 5
    assert ev.get_column("event_type").to_list() == ["view", "view", "cart", "fav", "buy"]
    assert ev.get_column("category").to_list() == [
        "2520377",
        "2520771",
        "149192",
        "2951233",
        "4869428",
    ]
    assert ev.get_column("item_id")[0] == 2268318
    assert ev.get_column("timestamp")[0] == ts(1511544070)
    assert TaobaoReader(str(path)).read().events.equals(ev)


def test_taobao_with_header_line(tmp_path):
    path = write_bytes(
        tmp_path / "UserBehavior.csv",
        "user_id,item_id,category_id,behavior_type,timestamp\n" + TAOBAO,
    )
    assert TaobaoReader(str(path)).read().events.height == 5


def test_taobao_drop_invalid_timestamps(tmp_path):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO + "7,8,9,pv,-2134949234\n")
    ev = TaobaoReader(str(path), invalid_timestamps="drop").read().events
    assert ev.height == 5


def test_retailrocket(tmp_path):
    write_bytes(tmp_path / "events.csv", RETAILROCKET)
    raw = RetailrocketReader(str(tmp_path)).read()
    ev = check_canonical(raw)
    assert ev.get_column("event_type").to_list() == ["view", "view", "cart", "buy"]
    assert ev.get_column("timestamp")[0] == datetime(
        2015, 6, 2, 5, 2, 12, 117000, tzinfo=timezone.utc
    )
    assert ev.get_column("transactionid").to_list() == [None, None, None, 4000]
    assert ev.get_column("user_id").to_list() == [257597, 992329, 111016, 111016]


# -- RecBole -----------------------------------------------------------------------------------


def test_recbole_fixture(tmp_path):
    folder = write_recbole(tmp_path / "toy")
    raw = RecBoleReader(str(folder)).read()
    ev = check_canonical(raw)
    assert raw.name == "toy"
    assert ev.get_column("user_id").to_list() == ["196", "186", "196"]
    assert ev.get_column("timestamp")[1] == datetime(
        1998, 4, 4, 19, 22, 22, 500000, tzinfo=timezone.utc
    )
    assert ev.get_column("category").to_list() == ["Comedy", "Crime", "Animation"]
    items = {r["item_id"]: r for r in raw.items.iter_rows(named=True)}
    assert items["1"]["title"] == "Toy Story"
    assert items["1"]["class"] == ["Animation", "Children's", "Comedy"]
    assert items["302"]["title"] == 'L.A. "Confidential"'


def test_recbole_dataset_name_and_token_seq_context(tmp_path):
    inter = "uid:token\tiid:token\ttags:token_seq\tts:float\nu1\ti1\ta b\t1600000000\nu1\ti2\tc\t1600000100\n"
    write_bytes(tmp_path / "other.inter", inter)
    raw = RecBoleReader(
        str(tmp_path), dataset="other", user_field="uid", item_field="iid", time_field="ts"
    ).read()
    ev = check_canonical(raw)
    assert ev.get_column("tags").to_list() == [["a", "b"], ["c"]]
    assert raw.items is None


def _ml100k_dir() -> Path | None:
    candidates = [REPO.parent / "shared/data/ml-100k"]
    if os.environ.get("RECSYS_ML100K"):
        candidates.insert(0, Path(os.environ["RECSYS_ML100K"]))
    return next((c for c in candidates if (c / "ml-100k.inter").is_file()), None)


def test_recbole_real_ml100k():
    folder = _ml100k_dir()
    if folder is None:
        pytest.skip("real ml-100k RecBole files not found (set RECSYS_ML100K)")
    raw = RecBoleReader(str(folder)).read()
    ev = check_canonical(raw)
    assert ev.height == 100_000
    assert ev.get_column("user_id").n_unique() == 943
    assert ev.get_column("item_id").n_unique() == 1682
    assert raw.items is not None and raw.items.height == 1682
    assert raw.items.get_column("title").null_count() == 0
    assert ev.get_column("category").null_count() == 0
    assert ev.get_column("rating").is_between(1, 5).all()


# -- SASRec text -------------------------------------------------------------------------------


def test_sequence_text_has_no_timestamp(tmp_path):
    path = write_bytes(tmp_path / "ml-1m.txt", SASREC_TEXT + "\n")
    raw = SequenceTextReader(str(path)).read()
    ev = check_canonical(raw, has_time=False)
    assert "timestamp" not in ev.columns
    assert ev.schema["user_id"] == pl.Int64
    assert ev.select("user_id", "item_id").rows() == [
        (1, 1),
        (1, 2),
        (1, 3),
        (2, 2),
        (2, 1),
        (1, 4),
    ]


def test_sequence_text_string_ids_tab_separated(tmp_path):
    path = write_bytes(tmp_path / "x.txt", "u1\tA\nu1\tB\n")
    ev = SequenceTextReader(str(path), separator="\\t").read().events
    assert ev.get_column("item_id").to_list() == ["A", "B"]


# -- Tabular -----------------------------------------------------------------------------------


def test_tabular_csv_semicolon_iso(tmp_path):
    text = (
        "visitor;sku;ts;action;device\n"
        "v1;s1;2024-01-31T12:00:00Z;view;mobile\n"
        "v1;s2;2024-01-31 13:30:00;cart;mobile\n"
        "v2;s1;2024-02-01T00:00:00+02:00;view;desktop\n"
        "v2;s3;2024-02-02;buy;desktop\n"
    )
    path = write_bytes(tmp_path / "log.csv", text)
    reader = TabularReader(
        str(path),
        {"user": "visitor", "item": "sku", "timestamp": "ts", "event_type": "action"},
        separator=";",
    )
    ev = check_canonical(reader.read())
    assert ev.columns == ["user_id", "item_id", "timestamp", "event_type", "device"]
    assert ev.get_column("timestamp").to_list() == [
        datetime(2024, 1, 31, 12, tzinfo=timezone.utc),
        datetime(2024, 1, 31, 13, 30, tzinfo=timezone.utc),
        datetime(2024, 1, 31, 22, tzinfo=timezone.utc),
        datetime(2024, 2, 2, tzinfo=timezone.utc),
    ]
    assert ev.get_column("device").to_list() == ["mobile", "mobile", "desktop", "desktop"]


@pytest.mark.parametrize(
    "values,unit,expected",
    [
        ([1700000000, 1700000060], "auto", ts(1700000000)),
        (
            [1700000000123, 1700000060000],
            "auto",
            datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=timezone.utc),
        ),
        (
            [1700000000.5, 1700000060.0],
            "auto",
            datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=timezone.utc),
        ),
        ([5, 60], "s", ts(5)),
        ([5000, 60000], "ms", ts(5)),
    ],
)
def test_tabular_parquet_numeric_units(tmp_path, values, unit, expected):
    path = tmp_path / "log.parquet"
    pl.DataFrame({"u": [1, 1], "i": [10, 11], "t": values, "r": [4, 5]}).write_parquet(path)
    raw = TabularReader(
        str(path), {"user": "u", "item": "i", "timestamp": "t", "rating": "r"}, timestamp_unit=unit
    ).read()
    ev = check_canonical(raw)
    assert ev.get_column("timestamp")[0] == expected
    assert ev.get_column("rating").to_list() == [4.0, 5.0]


def test_tabular_parquet_native_datetimes_and_items(tmp_path):
    path = tmp_path / "log.parquet"
    pl.DataFrame(
        {
            "user_id": ["a", "a", "b"],
            "item_id": [1, 2, 1],
            "when": [datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 11), datetime(2024, 1, 2)],
        }
    ).write_parquet(path)
    items = write_bytes(
        tmp_path / "items.csv", "item_id,name,cat\n1,Blue mug,kitchen\n2,Red pen,office\n"
    )
    raw = TabularReader(
        str(path),
        {"user": "user_id", "item": "item_id", "timestamp": "when"},
        items_path=str(items),
        item_columns={"title": "name", "category": "cat"},
    ).read()
    ev = check_canonical(raw)
    assert ev.get_column("timestamp")[0] == datetime(2024, 1, 1, 10, tzinfo=timezone.utc)
    assert ev.get_column("category").to_list() == ["kitchen", "office", "kitchen"]
    assert dict(raw.items.select("item_id", "title").rows()) == {1: "Blue mug", 2: "Red pen"}


def test_tabular_without_time_and_string_numbers(tmp_path):
    path = write_bytes(tmp_path / "log.tsv", "u\ti\tt\n1\t2\t1700000000\n1\t3\t1700000100\n")
    ev = TabularReader(str(path), {"user": "u", "item": "i"}, separator="tab").read().events
    assert "timestamp" not in ev.columns and ev.columns == ["user_id", "item_id", "t"]
    ev = (
        TabularReader(str(path), {"user": "u", "item": "i", "timestamp": "t"}, separator="\t")
        .read()
        .events
    )
    assert ev.get_column("timestamp")[1] == ts(1700000100)


def test_tabular_gzip_csv_and_latin1_encoding(tmp_path):
    path = write_gz(
        tmp_path / "log.csv.gz", "user,item,timestamp\nJosé,x,1700000000\n".encode("latin-1")
    )
    ev = (
        TabularReader(
            str(path),
            {"user": "user", "item": "item", "timestamp": "timestamp"},
            encoding="latin-1",
        )
        .read()
        .events
    )
    assert ev.get_column("user_id").to_list() == ["José"]


# -- configs, fingerprints ---------------------------------------------------------------------

CONFIGS = {
    "movielens": ("movielens", write_ml1m),
    "amazon": ("amazon", lambda d: write_bytes(d / "Books.csv", AMAZON_2018_CSV)),
    "taobao": ("taobao", lambda d: write_bytes(d / "UserBehavior.csv", TAOBAO).parent),
    "retailrocket": ("retailrocket", lambda d: write_bytes(d / "events.csv", RETAILROCKET).parent),
    "recbole": ("recbole", lambda d: write_recbole(d / "toy")),
    "sasrec_text": ("sasrec_text", lambda d: write_bytes(d / "ml-1m.txt", SASREC_TEXT)),
    "tabular": (
        "tabular",
        lambda d: write_bytes(
            d / "log.csv", "user_id,item_id,timestamp\n1,2,1700000000\n1,3,1700000005\n"
        ),
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_configs_instantiate_readers(tmp_path, config):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf = OmegaConf.load(REPO / "conf" / "data" / f"{config}.yaml")
    assert list(conf.defaults) == ["base", "_self_"]
    assert conf.name == CONFIGS[config][0]
    assert OmegaConf.to_container(conf, resolve=False)["reader"]["path"] == "${data.path}"
    del conf["defaults"]
    conf.path = str(CONFIGS[config][1](tmp_path / "raw"))
    root = OmegaConf.create({"data": conf})
    reader = instantiate(root.data.reader)
    assert isinstance(reader, DatasetReader)
    raw = reader.read()
    assert raw.events.height > 0
    assert reader.fingerprint() == reader.fingerprint()
    assert all(isinstance(p, Path) for p in reader.source_files())


def test_fingerprint_follows_file_changes(tmp_path):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO)
    reader = TaobaoReader(str(path))
    before = reader.fingerprint()
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert reader.fingerprint() != before
    assert TaobaoReader(str(path), invalid_timestamps="drop").fingerprint() != reader.fingerprint()
