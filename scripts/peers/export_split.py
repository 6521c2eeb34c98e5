"""Write the product's prepared data and leave-one-out split as plain Parquet sequences, so that
a peer library (RePlay, in its own virtual environment) trains and is evaluated on exactly the
cases the product uses.

    python scripts/peers/export_split.py OUT_DIR data=movielens data.path=../shared/data/ml-1m-users1-1500

Any ``recsys train`` override selects the data (``data=...``, ``data.path=...``,
``data.preparation.*``). Writes ``OUT_DIR/sequences.parquet``, one row per user: ``user`` (index),
``train`` (the item indices 0..N-1 of the user's training events, oldest first), ``val_target``
and ``test_target`` (item index, or -1 when the user has no such case), and
``OUT_DIR/meta.json`` (number of items, users, the data's fingerprint and split).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from recsys_cli.builders import build_datamodule  # noqa: E402
from recsys_cli.compose import compose_train  # noqa: E402
from recsys_cli.io import atomic_write, write_json_atomic  # noqa: E402


def export(out_dir: Path, overrides: list[str]) -> dict:
    cfg = compose_train([*overrides, "scales=none", f"paths.run_dir={out_dir}"])
    dm = build_datamodule(cfg)
    data = dm.load()
    split = dm.split
    starts = data.offsets[:-1]
    # product item indices are 1..N (0 = padding); peers count from 0
    train = [data.items[s:e] - 1 for s, e in zip(starts, split.train_end, strict=True)]
    val = np.full(data.num_users, -1, dtype=np.int64)
    test = np.full(data.num_users, -1, dtype=np.int64)
    val[data.user_of_event[split.val_targets]] = data.items[split.val_targets] - 1
    test[data.user_of_event[split.test_targets]] = data.items[split.test_targets] - 1
    frame = polars.DataFrame(
        {
            "user": np.arange(data.num_users),
            "train": [t.tolist() for t in train],
            "val_target": val,
            "test_target": test,
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "sequences.parquet", lambda tmp: frame.write_parquet(tmp))
    meta = {
        "num_items": int(data.num_items),
        "num_users": int(data.num_users),
        "events": int(data.num_events),
        "val_cases": int(len(split.val_targets)),
        "test_cases": int(len(split.test_targets)),
        "split": split.description,
        "fingerprint": data.fingerprint,
        "overrides": overrides,
    }
    write_json_atomic(out_dir / "meta.json", meta)
    return meta


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    print(json.dumps(export(Path(sys.argv[1]), sys.argv[2:]), indent=1))
