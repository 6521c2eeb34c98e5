"""Taobao UserBehavior (Alibaba Tianchi dataset 649).

``UserBehavior.csv``, no header: ``user_id,item_id,category_id,behavior_type,timestamp`` with
unix seconds and behaviour types pv / cart / fav / buy, mapped to the event types
view / cart / fav / buy. ``category_id`` becomes the (string) ``category``. A header line, as
some re-distributions add, is recognised and skipped.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.data.formats.canonical.assemble import build_events, finish_events
from recsys_cli.data.formats.canonical.csv_files import check_field_count, read_csv
from recsys_cli.data.formats.canonical.files import first_line, locate_file
from recsys_cli.data.formats.canonical.messages import Where, first_row, short
from recsys_cli.data.formats.canonical.options import (
    INVALID_TIMESTAMPS,
    check_choice,
    normalize_encoding,
)
from recsys_cli.errors import DataError

FILE = "UserBehavior.csv"
NAMES = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
EVENT_TYPES = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "buy"}
DOWNLOAD = "download UserBehavior.csv.zip from https://tianchi.aliyun.com/dataset/649 and unzip it"
WHAT = f"the Taobao {FILE} (user_id,item_id,category_id,behavior_type,timestamp; no header)"


class TaobaoReader(DatasetReader):
    """Reads the Taobao UserBehavior CSV (a file, or a folder holding UserBehavior.csv)."""

    name = "taobao"

    def __init__(self, path: str, encoding: str = "utf-8", invalid_timestamps: str = "error"):
        self.path = str(path)
        self.encoding = normalize_encoding(encoding)
        self.invalid_timestamps = check_choice(
            invalid_timestamps, INVALID_TIMESTAMPS, "data.reader.invalid_timestamps"
        )

    def _file(self) -> Path:
        return locate_file(
            self.path, WHAT, DOWNLOAD, names=(FILE,), pattern="*.csv", file_suffixes=(".csv",)
        )

    def source_files(self) -> list[Path]:
        return [self._file()]

    def read(self) -> RawDataset:
        path = self._file()
        head = first_line(path, self.encoding)
        fields = [f.strip().lower() for f in head.split(",")]
        has_header = fields[0] in ("user_id", "userid", "user")
        if has_header and fields != NAMES:
            raise DataError(
                f"{path} line 1: unexpected header {short(head, 80)}; expected no header or "
                f"{','.join(NAMES)}; is this the Taobao UserBehavior file?"
            )
        if not has_header:
            check_field_count(path, ",", NAMES, encoding=self.encoding, fmt="Taobao UserBehavior")
        dtypes = {
            "user_id": pl.Int64,
            "item_id": pl.Int64,
            "category_id": pl.Int64,
            "behavior_type": pl.String,
            "timestamp": pl.Int64,
        }
        df = read_csv(
            path,
            has_header=has_header,
            names=None if has_header else NAMES,
            dtypes=dtypes,
            required=NAMES if has_header else None,
            encoding=self.encoding,
            what=WHAT,
        )
        if has_header:
            df = df.rename(dict(zip(df.columns, NAMES, strict=True)))
        where = Where(path, first_line=2 if has_header else 1)
        behaviour = df.get_column("behavior_type")
        row = first_row(~behaviour.is_in(list(EVENT_TYPES)).fill_null(False))
        if row is not None:
            shown = short(behaviour[row] or "")
            raise DataError(
                f"{where.at(row, 'behavior_type')}: behaviour {shown} is not one of "
                f"{', '.join(EVENT_TYPES)} (the Taobao UserBehavior types); fix or remove that row"
            )
        counts: dict[str, int] = {}
        events = build_events(
            df,
            where,
            user="user_id",
            item="item_id",
            timestamp="timestamp",
            unit="s",
            event_type="behavior_type",
            category="category_id",
            event_map=EVENT_TYPES,
            on_invalid=self.invalid_timestamps,
            drop_key="data.reader.invalid_timestamps",
            counts=counts,
        )
        return RawDataset(
            events=finish_events(events, path),
            items=None,
            source_files=[path],
            name=self.name,
            read_stats=counts,
        )
