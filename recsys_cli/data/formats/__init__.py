"""Dataset readers: one per on-disk format, each returning the canonical tables (see base.py)."""

from recsys_cli.data.formats.amazon import AmazonReader
from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.data.formats.movielens import MovieLensReader
from recsys_cli.data.formats.recbole import RecBoleReader
from recsys_cli.data.formats.retailrocket import RetailrocketReader
from recsys_cli.data.formats.sequence_text import SequenceTextReader
from recsys_cli.data.formats.tabular import TabularReader
from recsys_cli.data.formats.taobao import TaobaoReader

__all__ = [
    "AmazonReader",
    "DatasetReader",
    "MovieLensReader",
    "RawDataset",
    "RecBoleReader",
    "RetailrocketReader",
    "SequenceTextReader",
    "TabularReader",
    "TaobaoReader",
]
