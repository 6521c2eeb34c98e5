"""The items' text fields: every reader hands them to the prepared data (``item_fields``),
aligned with the item vocabulary, through the cache and into the data spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import REPO, TINY_DATA
from fixtures_formats import (
    AMAZON_2018_META,
    AMAZON_2018_REVIEWS,
    AMAZON_2023_META,
    AMAZON_2023_REVIEWS,
    RECBOLE_SHOP_INTER,
    RECBOLE_SHOP_ITEM,
    TAOBAO,
    jsonl,
    write_bytes,
    write_ml1m,
    write_ml20m,
    write_ml100k,
    write_ml_titles,
    write_recbole,
)

from recsys_cli.builders import build_datamodule
from recsys_cli.compose import compose_train
from recsys_cli.data.formats import (
    AmazonReader,
    MovieLensReader,
    RecBoleReader,
    SequenceTextReader,
    TabularReader,
    TaobaoReader,
)
from recsys_cli.data.formats.base import RawDataset
from recsys_cli.data.prepare import prepare, prepare_events
from recsys_cli.data.prepared_data import PreparationConfig, PreparedData
from recsys_cli.data.synthetic import SyntheticSource

KEEP_ALL = PreparationConfig(min_user_events=2)
# the fixtures' events plus a second one of user 186, so that item 302 is kept
ML100K_UDATA = (
    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t1\t5\t881250950\n186\t1\t1\t891717743\n"
)
INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + ML100K_UDATA


def fields_of(data: PreparedData, item) -> dict:
    """The text fields of one raw item id (a field absent from the data is absent here too)."""
    i = data.item_vocab.index(item)
    return {name: values[i] for name, values in data.item_fields.items()}


def check_aligned(data: PreparedData) -> None:
    for name, values in data.item_fields.items():
        assert len(values) == data.num_items, name
        assert any(v is not None for v in values), name
        assert all(v is None or (isinstance(v, str) and v == v.strip() != "") for v in values)


# -- readers -> prepared data -------------------------------------------------------------------


def test_recbole_title_year_genres(tmp_path):
    data = prepare_events(RecBoleReader(str(write_recbole(tmp_path, inter=INTER))).read(), KEEP_ALL)
    check_aligned(data)
    assert list(data.item_fields) == ["title", "category", "genres", "year"]
    assert fields_of(data, "1") == {
        "title": "Toy Story",
        "category": "Animation",
        "genres": "Animation|Children's|Comedy",
        "year": "1995",
    }
    assert fields_of(data, "302")["title"] == 'L.A. "Confidential"'
    assert fields_of(data, "302")["year"] == "1997"
    assert data.item_titles == [fields_of(data, i)["title"] for i in data.item_vocab]


def test_recbole_brand_description_and_missing_values(tmp_path):
    raw = RecBoleReader(
        str(write_recbole(tmp_path, "shop", RECBOLE_SHOP_INTER, RECBOLE_SHOP_ITEM))
    ).read()
    assert raw.items is not None and "brand" in raw.items.columns
    data = prepare_events(raw, KEEP_ALL)
    check_aligned(data)
    assert data.item_vocab == ["a", "b", "c"]
    assert list(data.item_fields) == ["title", "category", "genres", "brand", "description"]
    assert fields_of(data, "a") == {
        "title": "Blue Mug",
        "category": "Kitchen",
        "genres": "Kitchen|Mugs",
        "brand": "Acme",
        "description": "A big blue mug.",
    }
    assert fields_of(data, "b") == {
        "title": "Red Pen",
        "category": None,
        "genres": None,
        "brand": None,
        "description": None,
    }
    assert set(fields_of(data, "c").values()) == {None}  # not in the .item file


def test_movielens_100k_year_out_of_the_title(tmp_path):
    write_bytes(write_ml100k(tmp_path) / "u.data", ML100K_UDATA)
    data = prepare_events(MovieLensReader(str(tmp_path)).read(), KEEP_ALL)
    check_aligned(data)
    assert data.item_vocab == [1, 242, 302]
    assert fields_of(data, 1) == {
        "title": "Toy Story",
        "category": "Animation",
        "genres": "Animation|Children's|Comedy",
        "year": "1995",
    }
    assert fields_of(data, 302)["title"] == "L.A. Confidential"
    # the titles of vocab/items.parquet stay as the file has them
    assert data.item_titles == ["Toy Story (1995)", "Kolya (1996)", "L.A. Confidential (1997)"]


def test_movielens_dat_and_csv_years_and_no_genres(tmp_path):
    ml1m = prepare_events(MovieLensReader(str(write_ml1m(tmp_path / "1m"))).read(), KEEP_ALL)
    assert fields_of(ml1m, 661)["title"] == "James and the Giant Peach"
    assert fields_of(ml1m, 661)["year"] == "1996"
    assert fields_of(ml1m, 661)["genres"] == "Animation|Children's|Musical"
    ml20m = prepare_events(MovieLensReader(str(write_ml20m(tmp_path / "20m"))).read(), KEEP_ALL)
    check_aligned(ml20m)
    assert fields_of(ml20m, 29)["title"] == (
        "City of Lost Children, The (Cité des enfants perdus, La)"
    )
    assert fields_of(ml20m, 131262) == {
        "title": "Innocence",
        "category": None,  # "(no genres listed)"
        "genres": None,
        "year": "2014",
    }


def test_movielens_titles_without_a_year(tmp_path):
    data = prepare_events(MovieLensReader(str(write_ml_titles(tmp_path))).read(), KEEP_ALL)
    titles = dict(zip(data.item_vocab, data.item_fields["title"], strict=True))
    years = dict(zip(data.item_vocab, data.item_fields["year"], strict=True))
    assert titles == {1: "Babylon 5", 2: "Cosmos", 3: "Office, The (2005-2013)"}
    assert years == {1: None, 2: "1980", 3: None}


def test_amazon_2018_metadata_fields(tmp_path):
    meta = [
        AMAZON_2018_META[0],
        {**AMAZON_2018_META[1], "brand": " Casio ", "description": "Adds numbers."},
    ]
    reviews = write_bytes(tmp_path / "Office.json", jsonl(AMAZON_2018_REVIEWS))
    meta_path = write_bytes(tmp_path / "meta_Office.json", jsonl(meta))
    data = prepare_events(AmazonReader(str(reviews), str(meta_path)).read(), KEEP_ALL)
    check_aligned(data)
    assert data.item_vocab == ["0001713353", "B00000JBLH"]
    assert fields_of(data, "0001713353") == {
        "title": "The Book",
        "category": "Books",
        "brand": None,  # "" in the file
        "description": "A story.",  # a list of paragraphs
    }
    assert fields_of(data, "B00000JBLH") == {
        "title": "A Calculator",
        "category": None,
        "brand": "Casio",
        "description": "Adds numbers.",  # a plain string
    }


def test_amazon_2023_store_is_the_brand(tmp_path):
    reviews = write_bytes(tmp_path / "All_Beauty.jsonl", jsonl(AMAZON_2023_REVIEWS))
    meta = write_bytes(tmp_path / "meta_All_Beauty.jsonl", jsonl(AMAZON_2023_META))
    raw = AmazonReader(str(reviews), metadata_path=str(meta)).read()
    data = prepare_events(raw, KEEP_ALL)
    check_aligned(data)
    assert fields_of(data, "B00YQ6X8EO")["brand"] == "Howard Products"
    assert fields_of(data, "B08BBQ29N5")["brand"] is None
    assert "description" not in data.item_fields  # empty or absent for every item


def test_amazon_without_metadata_has_no_fields(tmp_path):
    reviews = write_bytes(tmp_path / "All_Beauty.jsonl", jsonl(AMAZON_2023_REVIEWS))
    data = prepare_events(AmazonReader(str(reviews)).read(), KEEP_ALL)
    assert data.item_fields == {} and data.item_titles is None


def test_tabular_items_file_text_columns(tmp_path):
    events = write_bytes(tmp_path / "log.csv", "user,item,ts\n1,10,100000000\n1,20,100000100\n")
    items = write_bytes(
        tmp_path / "items.csv",
        "item,name,released,brand,notes\n10,Blue mug,1995-11-22,Acme,x\n20,Red pen,,,y\n",
    )
    reader = TabularReader(
        str(events),
        columns={"user": "user", "item": "item", "timestamp": "ts"},
        items_path=str(items),
        item_columns={"title": "name", "year": "released"},
    )
    data = prepare_events(reader.read(), KEEP_ALL)
    assert data.item_fields == {
        "title": ["Blue mug", "Red pen"],
        "year": ["1995", None],
        "brand": ["Acme", None],  # a column literally named brand
    }


def test_taobao_category_from_the_events(tmp_path):
    data = prepare_events(
        TaobaoReader(str(write_bytes(tmp_path / "ub.csv", TAOBAO))).read(), KEEP_ALL
    )
    assert list(data.item_fields) == ["category"]
    assert fields_of(data, 2576651)["category"] == "149192"


def test_event_category_most_frequent_then_smallest():
    events = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2, 2, 2, 2],
            "item_id": ["A", "A", "A", "B", "B", "C", "A", "D"],
            "category": ["y", "x", "y", "y", "x", None, "y", "z"],
        }
    )
    data = prepare_events(RawDataset(events), PreparationConfig(dedup=False))
    assert data.item_vocab == ["A", "B", "C", "D"]
    # A: y 3 times, x once; B: x and y once each (tie: x, the smaller index); C: none
    assert data.item_fields == {"category": ["y", "x", None, "z"]}


def test_sequence_text_has_no_fields(tmp_path):
    path = write_bytes(tmp_path / "seq.txt", "1 1\n1 2\n2 2\n2 1\n")
    data = prepare_events(SequenceTextReader(str(path)).read(), KEEP_ALL)
    assert data.item_fields == {}


def test_synthetic_titles_and_categories():
    source = SyntheticSource(num_users=40, num_items=30, num_categories=3, days=10, seed=3)
    raw, truth = source.generate()
    data = prepare_events(raw, PreparationConfig())
    check_aligned(data)
    assert list(data.item_fields) == ["title", "category"]
    for i, item in enumerate(data.item_vocab):
        category = truth.categories[truth.item_category[item]]
        assert data.item_fields["category"][i] == category
        title = data.item_fields["title"][i]
        assert category in title.split() and title.endswith(f" {item}")
    assert data.item_fields["title"] == data.item_titles


# -- the cache and the data spec ----------------------------------------------------------------


def test_cache_round_trip_keeps_the_fields(tmp_path):
    reader = RecBoleReader(
        str(write_recbole(tmp_path / "raw", "shop", RECBOLE_SHOP_INTER, RECBOLE_SHOP_ITEM))
    )
    built = prepare(reader, KEEP_ALL, tmp_path / "cache", "shop")
    assert (Path(built.stats["cache"]) / "item_fields.parquet").is_file()
    loaded = prepare(reader, KEEP_ALL, tmp_path / "cache", "shop")
    assert loaded.stats["cache"] == built.stats["cache"]
    assert loaded.item_fields == built.item_fields
    assert list(loaded.item_fields) == list(built.item_fields)
    assert loaded.item_titles == built.item_titles


def test_cache_round_trip_without_fields(tmp_path):
    reader = SequenceTextReader(str(write_bytes(tmp_path / "seq.txt", "1 1\n1 2\n2 2\n2 1\n")))
    built = prepare(reader, KEEP_ALL, tmp_path / "cache", "seq")
    assert not (Path(built.stats["cache"]) / "item_fields.parquet").exists()
    assert prepare(reader, KEEP_ALL, tmp_path / "cache", "seq").item_fields == {}


def test_the_spec_carries_the_fields(tmp_path):
    cfg = compose_train([*TINY_DATA, f"paths.run_dir={tmp_path}", f"paths.cache_dir={tmp_path}"])
    dm = build_datamodule(cfg)
    spec, data = dm.spec(), dm.load()
    assert set(spec.item_fields) == {"title", "category"}
    assert spec.item_fields["title"] == tuple(data.item_fields["title"])
    assert len(spec.item_fields["category"]) == spec.num_items


# -- the real ml-100k (RecBole atomic files) ----------------------------------------------------


def test_real_ml100k_fields(tmp_path):
    folder = REPO.parent / "shared" / "data" / "ml-100k"
    if not (folder / "ml-100k.inter").is_file():
        pytest.skip(f"real ml-100k RecBole files not found in {folder}")
    data = prepare(RecBoleReader(str(folder)), PreparationConfig(), tmp_path, "ml-100k")
    check_aligned(data)
    assert set(data.item_fields) == {"title", "category", "genres", "year"}
    toy = fields_of(data, data.item_vocab[data.item_fields["title"].index("Toy Story")])
    assert toy["year"] == "1995" and "Animation" in toy["genres"].split("|")
    assert sum(y is not None for y in data.item_fields["year"]) > 1600


@pytest.mark.parametrize("seed", range(5))
def test_event_category_matches_a_plain_count(seed):
    rng = np.random.default_rng(seed)
    n = 400
    items = rng.integers(0, 30, n)
    mixed = items % 3 == 0  # the other items keep one category on all their events
    cats = np.where(mixed, rng.integers(0, 4, n), items % 4)
    names = [None, "a", "b", "c"]
    events = pl.DataFrame(
        {
            "user_id": np.arange(n) % 20,  # every user kept
            "item_id": items,
            "category": [names[c] for c in cats],
        }
    )
    data = prepare_events(RawDataset(events), PreparationConfig(dedup=False, min_user_events=2))
    counts = (
        pl.DataFrame({"item": items, "cat": cats})
        .filter(pl.col("cat") > 0)
        .group_by("item", "cat")
        .len()
        .sort("item", "len", "cat", descending=[False, True, False])
        .unique("item", keep="first")
    )
    want = dict(zip(counts["item"].to_list(), counts["cat"].to_list(), strict=True))
    got = dict(zip(data.item_vocab, data.item_fields["category"], strict=True))
    assert got == {i: names[want[i]] if i in want else None for i in data.item_vocab}
