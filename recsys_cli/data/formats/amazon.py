"""Amazon product reviews: the 2018 (Ni et al.) and 2023 (Hou et al.) releases.

Review files (``path``):

* ratings-only CSV of 2018, no header: ``item,user,rating,timestamp`` (unix seconds);
* ratings CSV of 2023 with header ``user_id,parent_asin,rating,timestamp`` (milliseconds);
* JSON lines (``.json``, ``.jsonl``, optionally ``.gz``), one review per line, with the 2018
  field names (``reviewerID``, ``asin``, ``overall``, ``unixReviewTime`` in seconds) or the 2023
  ones (``user_id``, ``parent_asin`` falling back to ``asin``, ``rating``, ``timestamp`` in
  MILLISECONDS).

Metadata (``metadata_path``, JSON lines, optional) becomes the items table: 2018 (``asin``,
``title``, ``category`` list, ``main_cat``) or 2023 (``parent_asin``, ``title``,
``main_category``, ``categories`` list). ``category`` is the main category when given, else the
first entry of the category list (the full list is kept, ``|``-joined, in ``categories``).
Ids stay strings (ASINs have leading zeros).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_cli.data.formats import canonical as C
from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.errors import DataError

DOWNLOAD = (
    "download from https://amazon-reviews-2023.github.io/ (2023) or "
    "https://nijianmo.github.io/amazon/ (2018)"
)
WHAT = "an Amazon review file (ratings-only .csv, or .json/.jsonl[.gz] reviews)"
REVIEW_SUFFIXES = (".csv", ".json", ".jsonl", ".json.gz", ".jsonl.gz", ".csv.gz")

SCHEMA_2018 = {
    "reviewerID": pl.String,
    "asin": pl.String,
    "overall": pl.Float64,
    "unixReviewTime": pl.Int64,
    "verified": pl.Boolean,
}
SCHEMA_2023 = {
    "user_id": pl.String,
    "parent_asin": pl.String,
    "asin": pl.String,
    "rating": pl.Float64,
    "timestamp": pl.Int64,
    "verified_purchase": pl.Boolean,
}
META_2018 = {
    "asin": pl.String,
    "title": pl.String,
    "main_cat": pl.String,
    "category": pl.List(pl.String),
}
META_2023 = {
    "parent_asin": pl.String,
    "title": pl.String,
    "main_category": pl.String,
    "categories": pl.List(pl.String),
}


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return any(path.name.lower().endswith(s) for s in suffixes)


class AmazonReader(DatasetReader):
    """Reads Amazon reviews (2018 or 2023 release; CSV or JSON lines) and optional metadata."""

    name = "amazon"

    def __init__(self, path: str, metadata_path: str | None = None, encoding: str = "utf-8"):
        self.path = str(path)
        self.metadata_path = None if metadata_path in (None, "") else str(metadata_path)
        self.encoding = C.normalize_encoding(encoding)

    # -- files -----------------------------------------------------------------------------
    def _files(self) -> tuple[Path, Path | None]:
        p = Path(self.path)
        meta = Path(self.metadata_path) if self.metadata_path else None
        if p.is_dir():
            files = sorted(
                f for f in p.iterdir() if f.is_file() and _has_suffix(f, REVIEW_SUFFIXES)
            )
            reviews = [f for f in files if not f.name.lower().startswith("meta")]
            if len(reviews) != 1:
                raise DataError(
                    f"{p}: expected exactly one review file (.csv or .json[l][.gz], not meta_*) in the folder, "
                    f"found {C._fmt_list([f.name for f in reviews])}; set data.path to the file itself"
                )
            if meta is None:
                metas = [f for f in files if f.name.lower().startswith("meta")]
                meta = metas[0] if len(metas) == 1 else None
            p = reviews[0]
        elif not p.exists() and not p.parent.is_dir():
            C.require_dir(p.parent, WHAT, DOWNLOAD)
        C.require_file(p, WHAT, DOWNLOAD)
        if meta is not None:
            C.require_file(meta, "Amazon metadata JSON lines (meta_*.json[l][.gz])", DOWNLOAD)
        return p, meta

    def source_files(self) -> list[Path]:
        reviews, meta = self._files()
        return [reviews] + ([meta] if meta else [])

    # -- reading ---------------------------------------------------------------------------
    def read(self) -> RawDataset:
        reviews, meta = self._files()
        if _has_suffix(reviews, (".csv", ".csv.gz")):
            events = self._read_csv(reviews)
        else:
            events = self._read_json(reviews)
        items = self._read_meta(meta) if meta is not None else None
        events = C.finish_events(C.attach_item_category(events, items), reviews)
        return RawDataset(
            events=events, items=items, source_files=self.source_files(), name=self.name
        )

    def _read_csv(self, path: Path) -> pl.DataFrame:
        head = [f.strip().lower() for f in C.first_line(path, self.encoding).split(",")]
        if "user_id" in head:  # 2023 ratings CSV with a header; timestamps in milliseconds
            item_col = "parent_asin" if "parent_asin" in head else "asin"
            df = C.read_csv(
                path,
                dtypes={
                    "user_id": pl.String,
                    item_col: pl.String,
                    "rating": pl.Float64,
                    "timestamp": pl.Int64,
                },
                required=["user_id", item_col, "rating", "timestamp"],
                encoding=self.encoding,
                what="an Amazon 2023 ratings CSV (user_id,parent_asin,rating,timestamp)",
            )
            return C.build_events(
                df,
                C.Where(path),
                user="user_id",
                item=item_col,
                timestamp="timestamp",
                unit="ms",
                rating="rating",
            )
        names = ["item", "user", "rating", "timestamp"]
        C.check_field_count(path, ",", names, encoding=self.encoding, fmt="Amazon ratings-only CSV")
        df = C.read_csv(
            path,
            has_header=False,
            names=names,
            dtypes={
                "item": pl.String,
                "user": pl.String,
                "rating": pl.Float64,
                "timestamp": pl.Int64,
            },
            encoding=self.encoding,
            what="an Amazon ratings-only CSV (item,user,rating,timestamp; no header)",
        )
        return C.build_events(
            df,
            C.Where(path, first_line=1),
            user="user",
            item="item",
            timestamp="timestamp",
            unit="s",
            rating="rating",
        )

    def _read_json(self, path: Path) -> pl.DataFrame:
        keys = C.peek_json_keys(path, WHAT)
        if {"reviewerID", "asin"} <= keys:
            schema, user, unit, time, rating, verified = (
                SCHEMA_2018,
                "reviewerID",
                "s",
                "unixReviewTime",
                "overall",
                "verified",
            )
        elif "user_id" in keys and keys & {"parent_asin", "asin"}:
            schema, user, unit, time, rating, verified = (
                SCHEMA_2023,
                "user_id",
                "ms",
                "timestamp",
                "rating",
                "verified_purchase",
            )
        else:
            hint = (
                " (a metadata file? pass it as data.reader.metadata_path)"
                if "title" in keys
                else ""
            )
            raise DataError(
                f"{path} line 1: not an Amazon review record{hint}: found fields {C._fmt_list(sorted(keys))}; "
                "expected the 2018 fields reviewerID, asin, overall, unixReviewTime or the 2023 fields "
                "user_id, parent_asin, rating, timestamp"
            )
        parts = []
        for df, where in C.iter_ndjson(path, schema, encoding=self.encoding, what=WHAT):
            if schema is SCHEMA_2023:
                df = df.with_columns(pl.coalesce("parent_asin", "asin").alias("_item")).drop(
                    "parent_asin", "asin"
                )
                item = "_item"
                labels = {"_item": "parent_asin"}
            else:
                item, labels = "asin", {}
            df = df.rename({verified: "verified"})
            parts.append(
                C.build_events(
                    df,
                    where,
                    user=user,
                    item=item,
                    timestamp=time,
                    unit=unit,
                    rating=rating,
                    labels=labels,
                    allow_empty=True,
                )
            )
        events = pl.concat(parts, how="vertical") if parts else pl.DataFrame()
        if events.height == 0:
            raise DataError(f"{path} has no reviews; expected {WHAT}")
        return events

    def _read_meta(self, path: Path) -> pl.DataFrame:
        what = "Amazon metadata JSON lines (meta_*.json[l][.gz])"
        keys = C.peek_json_keys(path, what)
        if "parent_asin" in keys:
            schema, item, main, cats = META_2023, "parent_asin", "main_category", "categories"
        elif "asin" in keys:
            schema, item, main, cats = META_2018, "asin", "main_cat", "category"
        else:
            raise DataError(
                f"{path} line 1: not an Amazon metadata record: found fields {C._fmt_list(sorted(keys))}; "
                "expected asin (2018) or parent_asin (2023)"
            )
        parts = []
        for df, where in C.iter_ndjson(path, schema, encoding=self.encoding, what=what):
            main_cat = pl.col(main).str.strip_chars()
            df = df.select(
                item,
                "title",
                pl.coalesce(
                    pl.when(main_cat != "").then(main_cat), pl.col(cats).list.first()
                ).alias("category"),
                pl.col(cats).list.join("|").alias("categories"),
            )
            parts.append(C.build_items(df, where, item=item, title="title", category="category"))
        if not parts:
            raise DataError(f"{path} has no records; expected {what}")
        return pl.concat(parts, how="vertical").unique("item_id", keep="first", maintain_order=True)
