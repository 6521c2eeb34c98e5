"""Benchmark presets: the data, sizes and defaults of one benchmark setting.

A new preset is one entry of :data:`PRESETS`: a real dataset names its data config and folder
(``data``, ``data_path``), a synthetic one the reader's settings (``reader``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    reader: dict[str, Any]
    preparation: dict[str, Any]
    max_len: int
    dim: int = 64
    layers: int = 2
    batch_size: int = 128
    eval_batch_size: int = 256
    epochs: int = 10
    objective: str = "full_ce"
    max_steps: int | None = None
    eval_batches: int | None = None
    matmul_size: int = 2048
    note: str = ""
    # a real dataset instead of the synthetic reader: the data config (e.g. "recbole") and the
    # default folder, relative to the repository (--data-path overrides it)
    data: str = "synthetic"
    data_path: str | None = None
    dropout: float = 0.2
    # validation NDCG@10 levels whose time to reach is reported (--levels overrides them)
    levels: tuple[float, ...] = (0.05, 0.10)
    # metrics.filter_seen for both contenders (None: the product's default, auto)
    filter_seen: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    # MovieLens-1M's own files at SASRec's sizes (Kang & McAuley 2018; the SASRec+ recipe): the
    # headline real-data setting (users 1-1,500 in ../shared/data; any ML-1M folder with --data-path)
    "ml1m": Preset(
        reader={},
        preparation={},
        max_len=200,
        epochs=40,
        data="movielens",
        data_path="../shared/data/ml-1m-users1-1500",
        dropout=0.1,
        levels=(0.05, 0.10, 0.15),
        filter_seen=True,
        note="MovieLens-1M files, max_len 200",
    ),
    # ~166 events per user (33 sessions of ~5 events) x 6,000 users ~ 1M events, sized like
    # MovieLens-1M (for scale only: the real data's learning curve is not this log's)
    "ml1m_synthetic": Preset(
        reader={
            "num_users": 6000,
            "num_items": 3500,
            "num_categories": 20,
            "sessions_per_user": 33.0,
            "session_length": 5.0,
        },
        preparation={"min_user_events": 5, "min_item_events": 5},
        max_len=200,
        epochs=10,
        note="synthetic log sized like MovieLens-1M",
    ),
    # shop-like: few sessions per user (~17 events), a large catalogue; every item kept
    "shop100k": Preset(
        reader={
            "num_users": 100_000,
            "num_items": 100_000,
            "num_categories": 100,
            "sessions_per_user": 4.0,
            "session_length": 4.0,
        },
        preparation={"min_user_events": 5, "min_item_events": 1},
        max_len=50,
        epochs=5,
        objective="sampled_softmax",
        note="shop-like log, 100k items; the product trains with sampled softmax",
    ),
    "shop1m": Preset(
        reader={
            "num_users": 600_000,
            "num_items": 1_000_000,
            "num_categories": 1000,
            "sessions_per_user": 4.0,
            "session_length": 4.0,
        },
        preparation={"min_user_events": 5, "min_item_events": 1},
        max_len=50,
        epochs=3,
        objective="sampled_softmax",
        note="shop-like log, 1M items; the product trains with sampled softmax",
    ),
    # MovieLens-100k (RecBole atomic files, not in the repository) at SASRec's ML-1M sizes
    "ml100k": Preset(
        reader={},
        preparation={},
        max_len=200,
        epochs=40,
        data="recbole",
        data_path="../shared/data/ml-100k",
        note="MovieLens-100k, max_len 200",
    ),
    "tiny": Preset(
        reader={
            "num_users": 300,
            "num_items": 200,
            "num_categories": 5,
            "days": 20,
            "sessions_per_user": 6.0,
            "session_length": 4.0,
        },
        preparation={"min_user_events": 5, "min_item_events": 2},
        max_len=20,
        dim=16,
        batch_size=32,
        eval_batch_size=64,
        epochs=1,
        max_steps=2,
        eval_batches=2,
        matmul_size=256,
        note="smoke test",
    ),
}
