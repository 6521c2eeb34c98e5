"""SASRec / BERT4Rec benchmark text files: one ``user item`` pair per line, in time order.

There are no timestamps: the events have NO ``timestamp`` column and the file order is the time
order (count-based scales only). Ids are integers when every id parses as one, else strings.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_cli.data.formats import canonical as C
from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.errors import DataError

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
        self.separator = C.normalize_separator(separator)
        self.encoding = C.normalize_encoding(encoding)

    def _file(self) -> Path:
        p = Path(self.path)
        if p.is_dir():
            txts = sorted(p.glob("*.txt"))
            if len(txts) == 1:
                return C.require_file(txts[0], WHAT, DOWNLOAD)
            raise DataError(
                f"{p}: expected exactly one .txt file in the folder, found {C._fmt_list([t.name for t in txts])}; "
                "set data.path to the file"
            )
        if not p.exists() and not p.parent.is_dir():
            C.require_dir(p.parent, WHAT, DOWNLOAD)
        return C.require_file(p, WHAT, DOWNLOAD)

    def source_files(self) -> list[Path]:
        return [self._file()]

    def read(self) -> RawDataset:
        path = self._file()
        names = ["user", "item"]
        C.check_field_count(path, self.separator, names, encoding=self.encoding, fmt="SASRec text")
        df = C.read_csv(
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
        where = C.Where(path, line_of=lambda row: int(lines[row]))
        events = C.build_events(df, where, user="user", item="item", drop=("_line",))
        return RawDataset(
            events=C.finish_events(events, path), items=None, source_files=[path], name=path.stem
        )
