"""MovieLens (GroupLens): ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ml-32m.

The variant is detected from the files in the folder:

* ml-100k: ``u.data`` (tab: user, item, rating, unix seconds; no header) and ``u.item``
  (``|``-separated, Latin-1: id, title, release date, video date, IMDb URL, 19 genre flags);
* ml-1m / ml-10m: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) and ``movies.dat``
  (``MovieID::Title::Genres``, genres ``|``-separated; ml-1m's file is Latin-1);
* ml-20m / 25m / 32m: ``ratings.csv`` (header ``userId,movieId,rating,timestamp``) and
  ``movies.csv`` (header ``movieId,title,genres``; titles with commas are quoted).

Items get ``title`` (as in the file, the year included), ``year`` (the year in parentheses at the
end of the title; in ml-100k else the year of the release date), ``category`` (the first genre)
and ``genres`` (all, ``|``-joined; none for ``(no genres listed)``); events get the ``category``
of their movie and the ``rating``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import polars as pl

from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.data.formats.canonical.assemble import (
    attach_item_category,
    build_events,
    build_items,
    finish_events,
    title_year,
    year_of,
)
from recsys_cli.data.formats.canonical.csv_files import check_field_count, read_csv, read_lines
from recsys_cli.data.formats.canonical.files import (
    check_text,
    first_line,
    require_dir,
    require_file,
)
from recsys_cli.data.formats.canonical.messages import Where, first_row, fmt_list, one_line, short
from recsys_cli.errors import DataError

log = logging.getLogger(__name__)

DOWNLOAD = "download and unzip an archive from https://grouplens.org/datasets/movielens/"
EXPECTED = (
    "MovieLens files: u.data + u.item (ml-100k), ratings.dat + movies.dat (ml-1m, ml-10m) "
    "or ratings.csv + movies.csv (ml-20m, ml-25m, ml-32m)"
)
# (variant, ratings file, movies file), in detection order
VARIANTS = (
    ("ml-100k", "u.data", "u.item"),
    ("ml-1m/10m", "ratings.dat", "movies.dat"),
    ("ml-20m+", "ratings.csv", "movies.csv"),
)
GENRES_100K = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
NO_GENRE = "(no genres listed)"
RATING_FIELDS = ("UserID", "MovieID", "Rating", "Timestamp")


def _decode_legacy(path: Path) -> str:
    """Text of a GroupLens movie list: UTF-8 when valid, else Latin-1 (ml-100k, ml-1m)."""
    raw = require_file(path, "the MovieLens movie list", DOWNLOAD).read_bytes()
    check_text(path, encoding_key=None)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _genre_columns(genres: pl.Expr) -> list[pl.Expr]:
    """category (first genre) and genres from a '|'-joined string (none for '(no genres listed)'),
    and the year at the end of the title."""
    first = genres.str.split("|").list.first()
    return [
        pl.when(first == NO_GENRE).then(None).otherwise(first).alias("category"),
        pl.when(genres == NO_GENRE).then(None).otherwise(genres).alias("genres"),
        title_year(pl.col("title")).alias("year"),
    ]


# the items frame's columns made by _genre_columns
_GENRE_FIELDS = {"category": "category", "genres": "genres", "year": "year"}


class MovieLensReader(DatasetReader):
    """Reads a MovieLens folder (any GroupLens variant, detected from the files present)."""

    name = "movielens"

    def __init__(self, path: str):
        self.path = str(path)

    # -- layout ----------------------------------------------------------------------------
    def _layout(self) -> tuple[str, Path, Path | None]:
        folder = Path(self.path)
        if folder.is_file():
            folder = folder.parent
        require_dir(folder, EXPECTED, DOWNLOAD)
        for bases in ([folder], sorted(p for p in folder.iterdir() if p.is_dir())):
            found = [(v, b, r, m) for b in bases for v, r, m in VARIANTS if (b / r).is_file()]
            if len(found) > 1:
                names = [f"{(b / r).relative_to(folder)} ({v})" for v, b, r, _ in found]
                raise DataError(
                    f"{folder}: holds the ratings of more than one MovieLens release "
                    f"({', '.join(names)}), so which to read is unclear; set data.path to a "
                    "folder with only one of them"
                )
            if found:
                variant, base, ratings, movies = found[0]
                movie_path = base / movies
                return variant, base / ratings, movie_path if movie_path.is_file() else None
        found = sorted(p.name for p in folder.iterdir())
        archives = [name for name in found if name.lower().endswith(".zip")]
        todo = f"unzip {archives[0]} in this folder" if archives else f"{DOWNLOAD} into this folder"
        raise DataError(
            f"{folder}: no MovieLens ratings file (looked for u.data, ratings.dat, ratings.csv; "
            f"found {fmt_list(found)}); {todo}"
        )

    def source_files(self) -> list[Path]:
        _, ratings, movies = self._layout()
        return [ratings] + ([movies] if movies is not None else [])

    # -- reading ---------------------------------------------------------------------------
    def read(self) -> RawDataset:
        variant, ratings, movies = self._layout()
        if variant == "ml-100k":
            events = self._read_100k(ratings)
            items = self._items_100k(movies) if movies else None
        elif variant == "ml-1m/10m":
            events = self._read_dat(ratings)
            items = self._items_dat(movies) if movies else None
        else:
            events = self._read_csv(ratings)
            items = self._items_csv(movies) if movies else None
        if movies is None:
            log.warning(
                "%s: no movie list next to %s; items have no titles", ratings.parent, ratings.name
            )
        events = finish_events(attach_item_category(events, items), ratings)
        return RawDataset(
            events=events,
            items=items,
            source_files=self.source_files(),
            name=ratings.parent.name or self.name,
        )

    @staticmethod
    def _read_100k(path: Path) -> pl.DataFrame:
        names = ["user", "item", "rating", "timestamp"]
        check_field_count(path, "\t", names, encoding_key=None, fmt="ml-100k u.data")
        df = read_csv(
            path,
            separator="\t",
            has_header=False,
            names=names,
            dtypes={
                "user": pl.Int64,
                "item": pl.Int64,
                "rating": pl.Float64,
                "timestamp": pl.Int64,
            },
            quote_char=None,
            what="the ml-100k u.data file (user, item, rating, timestamp; tab-separated)",
            encoding_key=None,
        )
        return build_events(
            df,
            Where(path, first_line=1),
            user="user",
            item="item",
            timestamp="timestamp",
            unit="s",
            rating="rating",
            integer_ids=True,
        )

    @staticmethod
    def _dat_error(path: Path) -> None:
        """Raise the line-level error of a ratings.dat file (wrong field count or empty line)."""
        lines = read_lines(path)
        counts = lines.fill_null("").str.count_matches("::", literal=True) + 1
        bad = first_row((counts != 4) | lines.is_null() | (lines.str.strip_chars() == ""))
        if bad is None:
            return
        line = lines[bad]
        if not line or not line.strip():
            raise DataError(f"{path} line {bad + 1}: empty line; remove it")
        msg = (
            f"{path} line {bad + 1}: {counts[bad]} field(s) separated by '::', expected 4 "
            f"({'::'.join(RATING_FIELDS)}): {short(line, 80)}"
        )
        if counts[bad] == 1:
            msg += "; wrong separator? ratings.dat uses '::' between fields"
        raise DataError(msg + "; fix or remove that line")

    def _read_dat(self, path: Path) -> pl.DataFrame:
        # '::' is two one-byte separators: every other column is empty.
        names = ["user", "_a", "item", "_b", "rating", "_c", "timestamp"]
        dtypes = {
            "user": pl.Int64,
            "_a": pl.String,
            "item": pl.Int64,
            "_b": pl.String,
            "rating": pl.Float64,
            "_c": pl.String,
            "timestamp": pl.Int64,
        }
        require_file(path, "ratings.dat (UserID::MovieID::Rating::Timestamp)", DOWNLOAD)
        first = first_line(path, encoding_key=None)
        if first.count("::") != 3:
            self._dat_error(path)
        df = read_csv(
            path,
            separator=":",
            has_header=False,
            names=names,
            dtypes=dtypes,
            quote_char=None,
            what="a MovieLens ratings.dat file (UserID::MovieID::Rating::Timestamp)",
            encoding_key=None,
            diagnose=lambda: self._dat_error(path),
        )
        wrong = pl.any_horizontal(
            *(pl.col(c).is_null() for c in ("user", "item", "rating", "timestamp")),
            *(pl.col(c).is_not_null() for c in ("_a", "_b", "_c")),
        )
        if df.select(wrong.any()).item():
            self._dat_error(path)
        return build_events(
            df,
            Where(path, first_line=1),
            user="user",
            item="item",
            timestamp="timestamp",
            unit="s",
            rating="rating",
            integer_ids=True,
            drop=("_a", "_b", "_c"),
        )

    @staticmethod
    def _read_csv(path: Path) -> pl.DataFrame:
        columns = ["userId", "movieId", "rating", "timestamp"]
        df = read_csv(
            path,
            dtypes={
                "userId": pl.Int64,
                "movieId": pl.Int64,
                "rating": pl.Float64,
                "timestamp": pl.Int64,
            },
            required=columns,
            encoding_key=None,
            what="a MovieLens ratings.csv (header userId,movieId,rating,timestamp)",
            hint=DOWNLOAD,
        )
        return build_events(
            df,
            Where(path),
            user="userId",
            item="movieId",
            timestamp="timestamp",
            unit="s",
            rating="rating",
            integer_ids=True,
        )

    # -- movie lists -----------------------------------------------------------------------
    @staticmethod
    def _items_100k(path: Path) -> pl.DataFrame:
        text = _decode_legacy(path)
        names = ["item", "title", "release", "video_release", "url", *[f"g{k}" for k in range(19)]]
        try:
            df = pl.read_csv(
                io.BytesIO(text.encode("utf-8")),
                separator="|",
                has_header=False,
                quote_char=None,
                infer_schema=False,
            )
        except pl.exceptions.PolarsError as exc:
            raise DataError(
                f"{path}: cannot read it as the ml-100k u.item file ('|'-separated, 24 fields) ({one_line(exc)})"
            ) from None
        if df.width != len(names):
            raise DataError(
                f"{path}: {df.width} '|'-separated fields per line, expected 24 "
                "(id|title|release date|video release date|IMDb URL|19 genre flags); is it u.item?"
            )
        df = df.rename(dict(zip(df.columns, names, strict=True)))
        genres = pl.concat_list(
            [pl.when(pl.col(f"g{k}") == "1").then(pl.lit(g)) for k, g in enumerate(GENRES_100K)]
        ).list.drop_nulls()
        df = df.select(
            "item",
            "title",
            genres.list.first().alias("category"),
            genres.list.join("|").alias("genres"),
            pl.coalesce(title_year(pl.col("title")), year_of(pl.col("release"))).alias("year"),
            pl.col("release").alias("release_date"),
        )
        return build_items(
            df,
            Where(path, first_line=1),
            item="item",
            title="title",
            category="category",
            genres="genres",
            year="year",
            integer_ids=True,
        )

    @staticmethod
    def _items_dat(path: Path) -> pl.DataFrame:
        text = _decode_legacy(path)
        lines = pl.Series("line", text.splitlines())
        parts = lines.str.splitn("::", 3).struct.rename_fields(["item", "title", "genres"])
        df = parts.struct.unnest().with_row_index("_row")
        df = df.filter(pl.col("item").str.strip_chars() != "")
        bad = first_row(df.get_column("genres").is_null())
        if bad is not None:
            row = df.get_column("_row")[bad]
            raise DataError(
                f"{path} line {row + 1}: expected MovieID::Title::Genres, found {short(lines[row], 80)}; "
                "fix that line"
            )
        lines_of = df.get_column("_row")
        df = df.select("item", "title", *_genre_columns(pl.col("genres")))
        where = Where(path, line_of=lambda r: int(lines_of[r]) + 1)
        return build_items(df, where, item="item", title="title", integer_ids=True, **_GENRE_FIELDS)

    @staticmethod
    def _items_csv(path: Path) -> pl.DataFrame:
        df = read_csv(
            path,
            dtypes={"movieId": pl.Int64, "title": pl.String, "genres": pl.String},
            required=["movieId", "title", "genres"],
            encoding_key=None,
            what="a MovieLens movies.csv (header movieId,title,genres)",
            hint=DOWNLOAD,
        )
        df = df.select("movieId", "title", *_genre_columns(pl.col("genres").cast(pl.String)))
        return build_items(
            df, Where(path), item="movieId", title="title", integer_ids=True, **_GENRE_FIELDS
        )
