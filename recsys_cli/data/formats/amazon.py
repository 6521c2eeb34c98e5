"""Amazon product reviews: the 2018 (Ni et al.) and 2023 (Hou et al.) releases.

Review files (``path``):

* ratings-only CSV of 2018, no header: ``item,user,rating,timestamp`` (unix seconds);
* ratings CSV of 2023 with header ``user_id,parent_asin,rating,timestamp`` (milliseconds);
* JSON lines (``.json``, ``.jsonl``, optionally ``.gz``), one review per line, with the 2018
  field names (``reviewerID``, ``asin``, ``overall``, ``unixReviewTime`` in seconds) or the 2023
  ones (``user_id``, ``parent_asin`` falling back to ``asin``, ``rating``, ``timestamp`` in
  MILLISECONDS).

Metadata (``metadata_path``, JSON lines, optional) becomes the items table: 2018 (``asin``,
``title``, ``category`` list, ``main_cat``, ``brand``, ``description``) or 2023 (``parent_asin``,
``title``, ``main_category``, ``categories`` list, ``store``, ``description``). ``category`` is
the main category when given, else the first entry of the category list (the full list is kept,
``|``-joined, in ``categories``); ``brand`` is the brand (2018) or the store (2023);
``description`` the description's paragraphs joined by spaces. Ids stay strings (ASINs have
leading zeros).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.data.formats.canonical.assemble import (
    attach_item_category,
    build_events,
    build_items,
    finish_events,
)
from recsys_cli.data.formats.canonical.csv_files import check_field_count, read_csv
from recsys_cli.data.formats.canonical.files import first_line, locate_file, require_file
from recsys_cli.data.formats.canonical.json_lines import iter_ndjson, peek_json_keys
from recsys_cli.data.formats.canonical.messages import Where, fmt_list
from recsys_cli.data.formats.canonical.options import normalize_encoding
from recsys_cli.errors import DataError

DOWNLOAD = (
    "download from https://amazon-reviews-2023.github.io/ (2023) or "
    "https://nijianmo.github.io/amazon/ (2018)"
)
WHAT = "an Amazon review file (ratings-only .csv, or .json/.jsonl[.gz] reviews)"
META_WHAT = "Amazon metadata JSON lines (meta_*.json[l][.gz])"
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
# brand, store and description are read as text whatever their JSON type (a list as its JSON
# text, decoded by _joined_text), so an odd record never fails the file
META_2018 = {
    "asin": pl.String,
    "title": pl.String,
    "main_cat": pl.String,
    "category": pl.List(pl.String),
    "brand": pl.String,
    "description": pl.String,
}
META_2023 = {
    "parent_asin": pl.String,
    "title": pl.String,
    "main_category": pl.String,
    "categories": pl.List(pl.String),
    "store": pl.String,
    "description": pl.String,
}


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return any(path.name.lower().endswith(s) for s in suffixes)


def _is_data_file(path: Path) -> bool:
    """A review or metadata file, by its name (.csv or .json[l], optionally .gz)."""
    return path.is_file() and _has_suffix(path, REVIEW_SUFFIXES)


def _is_meta(path: Path) -> bool:
    return path.name.lower().startswith("meta")


def _join_json(text: str) -> str:
    """The strings of a JSON list joined by spaces (the text itself when it is no such list)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if not isinstance(value, list):
        return text
    return " ".join(v.strip() for v in value if isinstance(v, str) and v.strip())


def _joined_text(s: pl.Series) -> pl.Series:
    """A JSON field read as text: lists of strings (their JSON text) joined by spaces."""
    is_list = s.str.strip_chars_start().str.starts_with("[").fill_null(False)
    if not is_list.any():
        return s
    lists = s.filter(is_list)
    try:
        joined = lists.str.json_decode(pl.List(pl.String)).list.join(" ")
    except pl.exceptions.PolarsError:  # not a list of strings everywhere: one by one
        joined = lists.map_elements(_join_json, return_dtype=pl.String)
    return s.scatter(np.flatnonzero(is_list.to_numpy()), joined)


class AmazonReader(DatasetReader):
    """Reads Amazon reviews (2018 or 2023 release; CSV or JSON lines) and optional metadata."""

    name = "amazon"

    def __init__(self, path: str, metadata_path: str | None = None, encoding: str = "utf-8"):
        self.path = str(path)
        self.metadata_path = None if metadata_path in (None, "") else str(metadata_path)
        self.encoding = normalize_encoding(encoding)

    # -- files -----------------------------------------------------------------------------
    def _files(self) -> tuple[Path, Path | None]:
        reviews = locate_file(
            self.path,
            WHAT,
            DOWNLOAD,
            pattern="*",
            keep=lambda f: _is_data_file(f) and not _is_meta(f),
            ambiguous=(
                "{folder}: expected exactly one review file (.csv or .json[l][.gz], not meta_*) "
                "in the folder, found {found}; set data.path to the file itself"
            ),
        )
        folder = Path(self.path)
        meta = Path(self.metadata_path) if self.metadata_path else None
        if meta is None and folder.is_dir():
            metas = [f for f in sorted(folder.iterdir()) if _is_data_file(f) and _is_meta(f)]
            meta = metas[0] if len(metas) == 1 else None
        if meta is not None:
            require_file(meta, META_WHAT, DOWNLOAD)
        return reviews, meta

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
        events = finish_events(attach_item_category(events, items), reviews)
        return RawDataset(
            events=events, items=items, source_files=self.source_files(), name=self.name
        )

    def _read_csv(self, path: Path) -> pl.DataFrame:
        head = [f.strip().lower() for f in first_line(path, self.encoding).split(",")]
        if "user_id" in head:  # 2023 ratings CSV with a header; timestamps in milliseconds
            item_col = "parent_asin" if "parent_asin" in head else "asin"
            df = read_csv(
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
            return build_events(
                df,
                Where(path),
                user="user_id",
                item=item_col,
                timestamp="timestamp",
                unit="ms",
                rating="rating",
            )
        names = ["item", "user", "rating", "timestamp"]
        check_field_count(path, ",", names, encoding=self.encoding, fmt="Amazon ratings-only CSV")
        df = read_csv(
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
        return build_events(
            df,
            Where(path, first_line=1),
            user="user",
            item="item",
            timestamp="timestamp",
            unit="s",
            rating="rating",
        )

    def _read_json(self, path: Path) -> pl.DataFrame:
        keys = peek_json_keys(path, WHAT, self.encoding)
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
                f"{path} line 1: not an Amazon review record{hint}: found fields {fmt_list(sorted(keys))}; "
                "expected the 2018 fields reviewerID, asin, overall, unixReviewTime or the 2023 fields "
                "user_id, parent_asin, rating, timestamp"
            )
        parts = []
        for df, where in iter_ndjson(path, schema, encoding=self.encoding, what=WHAT):
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
                build_events(
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
        keys = peek_json_keys(path, META_WHAT, self.encoding)
        if "parent_asin" in keys:
            schema, item, main, cats, brand = (
                META_2023, "parent_asin", "main_category", "categories", "store",
            )  # fmt: skip
        elif "asin" in keys:
            schema, item, main, cats, brand = META_2018, "asin", "main_cat", "category", "brand"
        else:
            raise DataError(
                f"{path} line 1: not an Amazon metadata record: found fields {fmt_list(sorted(keys))}; "
                "expected asin (2018) or parent_asin (2023)"
            )
        parts = []
        for df, where in iter_ndjson(path, schema, encoding=self.encoding, what=META_WHAT):
            main_cat = pl.col(main).str.strip_chars()
            df = df.select(
                item,
                "title",
                pl.coalesce(
                    pl.when(main_cat != "").then(main_cat), pl.col(cats).list.first()
                ).alias("category"),
                pl.col(cats).list.join("|").alias("categories"),
                pl.col(brand).alias("brand"),
                pl.col("description").map_batches(_joined_text, return_dtype=pl.String),
            )
            parts.append(
                build_items(
                    df,
                    where,
                    item=item,
                    title="title",
                    category="category",
                    brand="brand",
                    description="description",
                )
            )
        if not parts:
            raise DataError(f"{path} has no records; expected {META_WHAT}")
        return pl.concat(parts, how="vertical").unique("item_id", keep="first", maintain_order=True)
