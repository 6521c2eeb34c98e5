"""SASRec / BERT4Rec benchmark text files: one ``user item`` pair per line, in time order.

There are no timestamps: the events have NO ``timestamp`` column and the file order is the time
order (count-based scales only). Ids are integers when every id parses as one, else strings.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.data.formats.canonical.assemble import build_events, finish_events
from recsys_cli.data.formats.canonical.csv_files import check_field_count, read_csv
from recsys_cli.data.formats.canonical.files import locate_file
from recsys_cli.data.formats.canonical.messages import Where
from recsys_cli.data.formats.canonical.options import normalize_encoding, normalize_separator

DOWNLOAD = "e.g. ml-1m.txt / Beauty.txt from https://github.com/kang205/SASRec/tree/master/data"
WHAT = "a SASRec-style text file ('user item' per line, space-separated, in time order)"


def _maybe_int(s: pl.Series) -> pl.Series:
    ints = s.str.strip_chars().cast(pl.Int64, strict=False)
    return ints if ints.null_count() == s.null_count() else s


class SequenceTextReader(DatasetReader):
    """Reads ``user item`` lines (no time: the line order is the time order)."""

    name = "sasrec_text"

    def __init__(self, path: str, separator: str = " ", encoding: str = "utf-8"):
        self.path = str(path)
        self.separator = normalize_separator(separator)
        self.encoding = normalize_encoding(encoding)

    def _file(self) -> Path:
        return locate_file(
            self.path,
            WHAT,
            DOWNLOAD,
            pattern="*.txt",
            ambiguous=(
                "{folder}: expected exactly one .txt file in the folder, found {found}; "
                "set data.path to the file"
            ),
        )

    def source_files(self) -> list[Path]:
        return [self._file()]

    def read(self) -> RawDataset:
        path = self._file()
        names = ["user", "item"]
        check_field_count(path, self.separator, names, encoding=self.encoding, fmt="SASRec text")
        df = read_csv(
            path,
            separator=self.separator,
            has_header=False,
            names=names,
            dtypes={"user": pl.String, "item": pl.String},
            quote_char=None,
            encoding=self.encoding,
            what=WHAT,
        )
        # blank lines (e.g. at the end of the file) are skipped; line numbers stay exact
        df = df.with_row_index("_line", offset=1).filter(
            pl.col("user").is_not_null() | pl.col("item").is_not_null()
        )
        df = df.with_columns(_maybe_int(df.get_column("user")), _maybe_int(df.get_column("item")))
        lines = df.get_column("_line")
        where = Where(path, line_of=lambda row: int(lines[row]))
        events = build_events(df, where, user="user", item="item", drop=("_line",))
        return RawDataset(
            events=finish_events(events, path), items=None, source_files=[path], name=path.stem
        )
