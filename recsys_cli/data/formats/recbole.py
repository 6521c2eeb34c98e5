"""RecBole atomic files (``<name>.inter`` and optional ``<name>.item`` / ``<name>.user``).

Tab-separated, one typed header line such as
``user_id:token	item_id:token	rating:float	timestamp:float``. The ``:type`` suffixes are
stripped; ``token`` fields stay strings (ids as read), ``float`` fields become Float64,
``token_seq`` / ``float_seq`` fields (space-separated) become lists. ``timestamp`` (float unix
seconds) becomes the datetime. In ``.item`` a title-like field (``movie_title``, ``title``,
``item_name``) becomes ``title`` (the words joined by spaces), the first token of
``class`` / ``categories`` / ``category`` becomes ``category`` and, for a ``token_seq`` field,
all its tokens ``|``-joined become ``genres``; ``release_year`` / ``year`` becomes ``year``;
``brand`` and ``description`` keep their names (the original fields are kept as well; those used
as text are not split into lists). ``context`` (``data.columns.context``: name -> ``.inter`` field,
e.g. ``{device: device_id}``) names ``token`` / ``float`` fields that models embed as context of
each event (a ``token_seq`` / ``float_seq`` field has several values per event and is refused).
``.user`` (user features such as age, gender, occupation) becomes the users table, its user field
renamed ``user_id``. No quoting is used by RecBole, so quotes are kept as text.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.data.formats.canonical.assemble import (
    attach_item_category,
    build_events,
    build_items,
    finish_events,
)
from recsys_cli.data.formats.canonical.columns import check_ids
from recsys_cli.data.formats.canonical.context import CONTEXT_KEY, context_mapping
from recsys_cli.data.formats.canonical.csv_files import read_csv
from recsys_cli.data.formats.canonical.files import (
    first_line,
    locate_file,
    require_dir,
    require_file,
)
from recsys_cli.data.formats.canonical.messages import Where, fmt_list, short
from recsys_cli.data.formats.canonical.options import normalize_encoding
from recsys_cli.errors import DataError

TYPES = {
    "token": pl.String,
    "float": pl.Float64,
    "token_seq": pl.String,
    "float_seq": pl.String,
}
TITLE_FIELDS = ("movie_title", "title", "item_name", "name")
CATEGORY_FIELDS = ("class", "categories", "category", "genre", "genres")
# canonical item text field -> the .item fields that give it (the first present wins)
TEXT_FIELDS = {
    "year": ("release_year", "year"),
    "brand": ("brand",),
    "description": ("description",),
}
DOWNLOAD = (
    "get atomic files from https://github.com/RUCAIBox/RecSysDatasets "
    "(list: https://recbole.io/dataset_list.html)"
)


def _header(path: Path, encoding: str) -> list[tuple[str, str]]:
    """[(name, type)] from a RecBole header line; DataError naming the bad field."""
    line = first_line(path, encoding)
    fields = line.split("\t")
    if len(fields) == 1 and any(s in line for s in (" ", ",", ";")) and line.count(":") > 1:
        raise DataError(
            f"{path} line 1: one field when split on tab: {short(line, 80)}; wrong separator? "
            "RecBole atomic files are tab-separated"
        )
    out = []
    for field in fields:
        name, sep, kind = field.strip().rpartition(":")
        if not sep or not name:
            raise DataError(
                f"{path} line 1: header field {field!r} has no ':type' suffix; RecBole headers look like "
                "'user_id:token<TAB>item_id:token<TAB>timestamp:float'"
            )
        if kind not in TYPES:
            raise DataError(
                f"{path} line 1: header field {field!r} has unknown type {kind!r}; "
                f"expected one of {', '.join(TYPES)}"
            )
        out.append((name, kind))
    return out


def _read_atomic(
    path: Path, encoding: str, required: list[str], what: str, context: dict[str, str] | None = None
) -> tuple[pl.DataFrame, dict[str, str]]:
    """The file with the ':type' suffixes stripped, and {name: type}. ``context`` ({name:
    field}): fields that must be present with one value per event (``token`` or ``float``)."""
    require_file(path, what, DOWNLOAD)
    fields = _header(path, encoding)
    raw_names = [f"{n}:{k}" for n, k in fields]
    kinds = dict(fields)
    missing = [r for r in required if r not in kinds]
    if missing:
        raise DataError(
            f"{path}: missing field(s) {', '.join(missing)}; expected {', '.join(required)}, found "
            f"{fmt_list(list(kinds))}; set data.reader.user_field / item_field / time_field to the "
            "names this file uses"
        )
    for name, field in (context or {}).items():
        if field not in kinds:
            raise DataError(
                f"{path}: missing field {field!r} ({CONTEXT_KEY}.{name}); found {fmt_list(list(kinds))}; "
                f"set {CONTEXT_KEY}.{name} to a field of this file"
            )
        if kinds[field] not in ("token", "float"):
            raise DataError(
                f"{path}: field {field!r} ({CONTEXT_KEY}.{name}) has type {kinds[field]}; a context "
                "field needs one value per event (token or float)"
            )
    df = read_csv(
        path,
        separator="\t",
        dtypes={raw: TYPES[k] for raw, (_, k) in zip(raw_names, fields, strict=True)},
        quote_char=None,
        encoding=encoding,
        what=what,
    )
    return df.rename(dict(zip(df.columns, [n for n, _ in fields], strict=True))), kinds


def _sequences(df: pl.DataFrame, kinds: dict[str, str], keep_text: set[str]) -> pl.DataFrame:
    """Split token_seq / float_seq fields (except ``keep_text``) into lists."""
    exprs = []
    for name, kind in kinds.items():
        if name in keep_text or name not in df.columns:
            continue
        if kind == "token_seq":
            exprs.append(pl.col(name).cast(pl.String).str.split(" "))
        elif kind == "float_seq":
            exprs.append(
                pl.col(name).cast(pl.String).str.split(" ").cast(pl.List(pl.Float64), strict=False)
            )
    return df.with_columns(exprs) if exprs else df


class RecBoleReader(DatasetReader):
    """Reads a folder of RecBole atomic files ``<dataset>.inter`` (+ ``<dataset>.item``)."""

    name = "recbole"

    def __init__(
        self,
        path: str,
        dataset: str | None = None,
        encoding: str = "utf-8",
        user_field: str = "user_id",
        item_field: str = "item_id",
        time_field: str = "timestamp",
        context: dict | list | None = None,
    ):
        self.path = str(path)
        self.context = context_mapping(context)
        self.dataset = None if dataset in (None, "") else str(dataset)
        self.encoding = normalize_encoding(encoding)
        self.user_field, self.item_field, self.time_field = user_field, item_field, time_field

    def _files(self) -> tuple[str, Path, Path | None, Path | None]:
        p = Path(self.path)
        dataset = self.dataset
        if p.is_file() and p.suffix == ".inter":
            p, dataset = p.parent, dataset or p.stem
        require_dir(p, "RecBole atomic files <name>.inter (+ <name>.item)", DOWNLOAD)
        inter = locate_file(
            p,
            lambda f: f"the RecBole interaction file {dataset or f.stem}.inter",
            DOWNLOAD,
            names=(f"{dataset or p.name}.inter",),
            pattern="*.inter" if dataset is None else None,
            ambiguous=(
                "{folder}: no {folder.name}.inter (found .inter files: {found}); "
                "set data.reader.dataset to the dataset name (the file name without .inter)"
            ),
        )
        name = dataset or inter.stem
        item, user = p / f"{name}.item", p / f"{name}.user"
        return name, inter, item if item.is_file() else None, user if user.is_file() else None

    def source_files(self) -> list[Path]:
        _, inter, item, user = self._files()
        return [inter] + [f for f in (item, user) if f is not None]

    def read(self) -> RawDataset:
        name, inter, item_path, user_path = self._files()
        df, kinds = _read_atomic(
            inter,
            self.encoding,
            [self.user_field, self.item_field],
            f"a RecBole .inter file ({self.user_field}:token, {self.item_field}:token, ...)",
            self.context,
        )
        time = self.time_field if self.time_field in kinds else None
        if time is not None and kinds[time] not in ("float", "token"):
            raise DataError(
                f"{inter}: field {time!r} has type {kinds[time]}; expected float unix seconds"
            )
        df = _sequences(df, kinds, {self.user_field, self.item_field})
        events = build_events(
            df,
            Where(inter),
            user=self.user_field,
            item=self.item_field,
            timestamp=time,
            unit="s",
            rating="rating" if "rating" in kinds and kinds["rating"] == "float" else None,
            context=self.context,
        )
        items = self._items(item_path) if item_path is not None else None
        users = self._users(user_path) if user_path is not None else None
        events = finish_events(attach_item_category(events, items), inter)
        return RawDataset(
            events=events,
            items=items,
            users=users,
            source_files=self.source_files(),
            name=name,
            context=tuple(self.context),
        )

    def _users(self, path: Path) -> pl.DataFrame:
        df, kinds = _read_atomic(
            path,
            self.encoding,
            [self.user_field],
            f"a RecBole .user file ({self.user_field}:token, ...)",
        )
        df = _sequences(df, kinds, {self.user_field})
        ids = check_ids(df.get_column(self.user_field), Where(path), self.user_field, "user id")
        other = [c for c in df.columns if c != self.user_field]
        renamed = {c: f"{c}_raw" for c in other if c == "user_id"}
        return (
            df.select(other)
            .rename(renamed)
            .insert_column(0, ids.rename("user_id"))
            .unique("user_id", keep="first", maintain_order=True)
        )

    def _items(self, path: Path) -> pl.DataFrame:
        df, kinds = _read_atomic(
            path,
            self.encoding,
            [self.item_field],
            f"a RecBole .item file ({self.item_field}:token, ...)",
        )
        title = next((f for f in TITLE_FIELDS if f in kinds), None)
        cat = next((f for f in CATEGORY_FIELDS if f in kinds), None)
        text = {k: next((f for f in names if f in kinds), None) for k, names in TEXT_FIELDS.items()}
        keep = {self.item_field, title, *text.values()} - {None}
        df = _sequences(df, kinds, keep)
        genres = None
        if cat is not None:
            first = pl.col(cat)
            first = first.list.first() if kinds[cat] == "token_seq" else first.cast(pl.String)
            df = df.with_columns(first.alias("_category"))
            if kinds[cat] == "token_seq":
                df = df.with_columns(pl.col(cat).list.join("|").alias("_genres"))
                genres = "_genres"
        return build_items(
            df,
            Where(path),
            item=self.item_field,
            title=title,
            category="_category" if cat is not None else None,
            genres=genres,
            **text,
        )
