"""Writers of small dataset files in the exact on-disk formats of the public releases.

Shared by tests/test_formats.py and tests/test_bad_inputs.py. Every writer takes a folder,
writes the files there (nothing else) and returns the path a reader should be given.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from recsys_cli.data.formats import TabularReader
from recsys_cli.errors import DataError

# -- MovieLens ---------------------------------------------------------------------------------

ML100K_UDATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t1\t5\t881250950\n"


def _flags(*on: int) -> str:
    return "|".join("1" if k in on else "0" for k in range(19))


ML100K_UITEM_LINES = [
    # id|title|release date|video release date|IMDb URL|19 genre flags (unknown, Action, ...)
    f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|{_flags(3, 4, 5)}",
    f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|{_flags(5)}",
    f"302|L.A. Confidential (1997)|01-Jan-1997||http://us.imdb.com/M/title-exact?L%2EA%2E+Confidential+(1997)|{_flags(6, 10, 14, 16)}",
    f"1633|Á köldum klaka (Cold Fever) (1994)|08-Mar-1996||http://us.imdb.com/M/title-exact?Kaldum%20klaka%20(1994)|{_flags(5, 8)}",
]


def write_ml100k(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(ML100K_UDATA, encoding="ascii")
    (folder / "u.item").write_bytes(("\n".join(ML100K_UITEM_LINES) + "\n").encode("latin-1"))
    return folder


ML1M_RATINGS = (
    "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n2::3::2::978300000\n"
)
ML1M_MOVIES = (
    "3::Grumpier Old Men (1995)::Comedy|Romance\n"
    "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
    "2808::Misérables, Les (1998)::Drama\n"
)


def write_ml1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text(ML1M_RATINGS, encoding="ascii")
    (folder / "movies.dat").write_bytes(ML1M_MOVIES.encode("latin-1"))  # ml-1m is Latin-1
    return folder


ML10M_RATINGS = "1::122::5::838985046\n1::185::4.5::838983525\n7::122::0.5::1049764640\n"
ML10M_MOVIES = (
    "122::Boomerang (1992)::Comedy|Romance\n185::Net, The (1995)::Action|Crime|Thriller\n"
)


def write_ml10m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text(ML10M_RATINGS, encoding="ascii")
    (folder / "movies.dat").write_text(ML10M_MOVIES, encoding="utf-8")
    return folder


ML20M_RATINGS = (
    "userId,movieId,rating,timestamp\n"
    "1,2,3.5,1112486027\n"
    "1,29,3.5,1112484676\n"
    "2,11,4.0,974820889\n"
    "2,131262,0.5,1427784002\n"
)
ML20M_MOVIES = (
    "movieId,title,genres\n"
    "2,Jumanji (1995),Adventure|Children|Fantasy\n"
    '11,"American President, The (1995)",Comedy|Drama|Romance\n'
    '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Drama|Fantasy|Mystery|Sci-Fi\n'
    "131262,Innocence (2014),(no genres listed)\n"
)


def write_ml20m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(ML20M_RATINGS, encoding="utf-8")
    (folder / "movies.csv").write_text(ML20M_MOVIES, encoding="utf-8")
    return folder


# -- Amazon ------------------------------------------------------------------------------------

AMAZON_2018_CSV = (
    "0001713353,A1C6M8LCIX4M6M,5.0,1123804800\n"
    "0001713353,A1REUF3A1YCPHM,5.0,1112140800\n"
    "B00000JBLH,A1C6M8LCIX4M6M,3.0,1268006400\n"
)

AMAZON_2018_REVIEWS = [
    {
        "overall": 5.0,
        "verified": True,
        "reviewTime": "09 1, 2015",
        "reviewerID": "A1C6M8LCIX4M6M",
        "asin": "0001713353",
        "style": {"Format:": " Paperback"},
        "reviewerName": "Amazon Customer",
        "reviewText": 'Great book, "really" good.',
        "summary": "Five Stars",
        "unixReviewTime": 1441065600,
    },
    {
        "overall": 4.0,
        "vote": "2",
        "verified": False,
        "reviewTime": "12 5, 2014",
        "reviewerID": "A2ZZ",
        "asin": "B00000JBLH",
        "reviewerName": "Ünïcödé",
        "reviewText": "ok",
        "summary": "Four",
        "unixReviewTime": 1417737600,
        "image": ["https://images-na.ssl-images-amazon.com/x.jpg"],
    },
    {
        "overall": 1,
        "verified": True,
        "reviewTime": "01 2, 2016",
        "reviewerID": "A1C6M8LCIX4M6M",
        "asin": "B00000JBLH",
        "unixReviewTime": 1451692800,
    },
]

AMAZON_2018_META = [
    {
        "category": ["Books", "Children's Books", "Literature & Fiction"],
        "tech1": "",
        "description": ["A story."],
        "fit": "",
        "title": "The Book",
        "also_buy": ["B00000JBLH"],
        "tech2": "",
        "brand": "",
        "feature": [],
        "rank": "1,234 in Books (",
        "also_view": [],
        "main_cat": "Books",
        "similar_item": "",
        "date": "",
        "price": "$3.49",
        "asin": "0001713353",
        "imageURL": [],
        "imageURLHigh": [],
    },
    {
        "category": [],
        "title": "A Calculator",
        "rank": ["#1 in Office"],
        "main_cat": "",
        "asin": "B00000JBLH",
    },
]

AMAZON_2023_REVIEWS = [
    {
        "rating": 5.0,
        "title": "Such a lovely scent but not overpowering.",
        "text": "This spray is really nice.",
        "images": [],
        "asin": "B00YQ6X8EO",
        "parent_asin": "B00YQ6X8EO",
        "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ",
        "timestamp": 1588687728923,
        "helpful_vote": 0,
        "verified_purchase": True,
    },
    {
        "rating": 4.0,
        "title": "Works great",
        "text": "x",
        "images": [{"small_image_url": "https://m.media-amazon.com/a.jpg"}],
        "asin": "B081TJ8YS3",
        "parent_asin": "B08BBQ29N5",
        "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ",
        "timestamp": 1588615855070,
        "helpful_vote": 1,
        "verified_purchase": True,
    },
    {
        "rating": 1.0,
        "title": "no parent",
        "text": "y",
        "images": [],
        "asin": "B0000000XX",
        "user_id": "AFQLNQNQYFWQZPJQZS6V3NZU4QBQ",
        "timestamp": 1577836800000,
        "helpful_vote": 0,
        "verified_purchase": False,
    },
]

AMAZON_2023_META = [
    {
        "main_category": "All Beauty",
        "title": "Howard LC0008 Leather Conditioner, 8-Ounce",
        "average_rating": 4.8,
        "rating_number": 10,
        "features": [],
        "description": [],
        "price": None,
        "images": [{"thumb": "https://m.media-amazon.com/t.jpg", "variant": "MAIN"}],
        "videos": [],
        "store": "Howard Products",
        "categories": [],
        "details": {"Package Dimensions": "7.1 x 5.5 x 3 inches"},
        "parent_asin": "B00YQ6X8EO",
        "bought_together": None,
    },
    {
        "main_category": None,
        "title": "Nail Kit",
        "categories": ["Beauty & Personal Care", "Foot, Hand & Nail Care"],
        "parent_asin": "B08BBQ29N5",
        "details": {},
    },
]


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def write_gz(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data))
    return path


def write_bytes(path: Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    return path


# -- Taobao, Retailrocket ----------------------------------------------------------------------

TAOBAO = (
    "1,2268318,2520377,pv,1511544070\n"
    "1,2333346,2520771,pv,1511561733\n"
    "1,2576651,149192,cart,1511572885\n"
    "100,1603476,2951233,fav,1511680485\n"
    "100,2971043,4869428,buy,1511721735\n"
)

RETAILROCKET = (
    "timestamp,visitorid,event,itemid,transactionid\n"
    "1433221332117,257597,view,355908,\n"
    "1433224214164,992329,view,248676,\n"
    "1433221999827,111016,addtocart,248676,\n"
    "1433222147345,111016,transaction,248676,4000\n"
)

# -- RecBole, SASRec text ----------------------------------------------------------------------

RECBOLE_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n"
    "186\t302\t3\t891717742.5\n"
    "196\t1\t5\t881250950\n"
)
RECBOLE_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "242\tKolya\t1996\tComedy\n"
    '302\tL.A. "Confidential"\t1997\tCrime Film-Noir Mystery Thriller\n'
)


def write_recbole(
    folder: Path, name: str = "toy", inter: str = RECBOLE_INTER, item: str = RECBOLE_ITEM
) -> Path:
    write_bytes(folder / f"{name}.inter", inter)
    write_bytes(folder / f"{name}.item", item)
    return folder


SASREC_TEXT = "1 1\n1 2\n1 3\n2 2\n2 1\n1 4\n"


# -- item text fields (tests/test_item_fields.py) ------------------------------------------------

RECBOLE_SHOP_INTER = (
    "user_id:token\titem_id:token\ttimestamp:float\n"
    "u1\ta\t1700000000\nu1\tb\t1700000100\nu2\ta\t1700000200\nu2\tc\t1700000300\n"
)
RECBOLE_SHOP_ITEM = (  # write_recbole(folder, "shop", RECBOLE_SHOP_INTER, RECBOLE_SHOP_ITEM)
    # item c has no row; item b has no brand, description or categories
    "item_id:token\ttitle:token_seq\tbrand:token\tdescription:token_seq\tcategories:token_seq\n"
    "a\tBlue Mug\tAcme\tA big blue mug.\tKitchen Mugs\n"
    "b\tRed Pen\t\t\t\n"
)


ML_TITLES_RATINGS = (
    "userId,movieId,rating,timestamp\n"
    "1,1,4.0,1112486027\n1,2,3.0,1112486028\n1,3,5.0,1112486029\n2,1,2.0,1112486030\n"
    "2,2,1.0,1112486031\n"
)
ML_TITLES_MOVIES = (  # no year, a year, a range of years (no year either)
    "movieId,title,genres\n"
    "1,Babylon 5,Sci-Fi\n"
    "2,Cosmos (1980) ,Documentary\n"
    '3,"Office, The (2005-2013)",Comedy\n'
)


def write_ml_titles(folder: Path) -> Path:
    write_bytes(folder / "ratings.csv", ML_TITLES_RATINGS)
    write_bytes(folder / "movies.csv", ML_TITLES_MOVIES)
    return folder


COLS = {"user": "visitor", "item": "sku", "timestamp": "ts"}


def error_of(make_reader) -> str:
    """The message of the DataError that building + reading raises; it must be one line."""
    with pytest.raises(DataError) as info:
        reader = make_reader()
        reader.source_files()
        reader.read()
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and len(msg) < 600, msg
    assert "Traceback" not in msg and "polars" not in msg.lower(), msg
    return msg


def tabular(tmp_path, text: str | bytes, columns=None, name="log.csv", **kw):
    path = write_bytes(tmp_path / name, text)
    return path, (lambda: TabularReader(str(path), columns or COLS, **kw))
