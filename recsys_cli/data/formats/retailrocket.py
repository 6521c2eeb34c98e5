"""Retailrocket e-commerce events (Kaggle ``retailrocket/ecommerce-dataset``).

``events.csv`` with header ``timestamp,visitorid,event,itemid,transactionid``; timestamps in
MILLISECONDS; events view / addtocart / transaction become view / cart / buy.
``transactionid`` is kept as a context column. (The item property files are not read: their
category is time-varying.)
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.data.formats.canonical.assemble import build_events, finish_events
from recsys_cli.data.formats.canonical.csv_files import read_csv
from recsys_cli.data.formats.canonical.files import locate_file
from recsys_cli.data.formats.canonical.messages import Where
from recsys_cli.data.formats.canonical.options import normalize_encoding

FILE = "events.csv"
COLUMNS = ["timestamp", "visitorid", "event", "itemid", "transactionid"]
EVENT_TYPES = {"view": "view", "addtocart": "cart", "transaction": "buy"}
DOWNLOAD = (
    "download from https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset and unzip it"
)
WHAT = f"the Retailrocket {FILE} (header timestamp,visitorid,event,itemid,transactionid)"


class RetailrocketReader(DatasetReader):
    """Reads Retailrocket ``events.csv`` (the file, or the folder holding it)."""

    name = "retailrocket"

    def __init__(self, path: str, encoding: str = "utf-8"):
        self.path = str(path)
        self.encoding = normalize_encoding(encoding)

    def _file(self) -> Path:
        return locate_file(self.path, WHAT, DOWNLOAD, names=(FILE,), file_suffixes=(".csv",))

    def source_files(self) -> list[Path]:
        return [self._file()]

    def read(self) -> RawDataset:
        path = self._file()
        df = read_csv(
            path,
            dtypes={
                "timestamp": pl.Int64,
                "visitorid": pl.Int64,
                "event": pl.String,
                "itemid": pl.Int64,
                "transactionid": pl.Int64,
            },
            required=["timestamp", "visitorid", "event", "itemid"],
            expected=COLUMNS,
            encoding=self.encoding,
            what=WHAT,
            hint=DOWNLOAD,
        )
        events = build_events(
            df,
            Where(path),
            user="visitorid",
            item="itemid",
            timestamp="timestamp",
            unit="ms",
            event_type="event",
            event_map=EVENT_TYPES,
        )
        return RawDataset(
            events=finish_events(events, path), items=None, source_files=[path], name=self.name
        )
