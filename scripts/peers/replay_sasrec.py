"""RePlay's own SASRec on the product's split: RePlay's model, loss, optimizer, data pipeline and
Lightning module, trained in RePlay's virtual environment; validated after every epoch by full
ranking over the whole catalogue with the user's seen items removed, as the product evaluates.

    bash scripts/peers/run_replay.sh OUT_DIR data=movielens data.path=../shared/data/ml-1m-users1-1500
    # or, given a split exported by scripts/peers/export_split.py:
    .venv-replay/bin/python scripts/peers/replay_sasrec.py SPLIT_DIR --out result.json --seed 1

Sizes default to SASRec's for ML-1M (max_len 200, dim 64, 2 blocks, 1 head, feed-forward 64,
dropout 0.1, lr 1e-3, batch 128, full cross-entropy): ``SasRec.from_params`` with
``OptimizerFactory(learning_rate=lr)`` (Adam, betas 0.9 / 0.98, RePlay's defaults) and
``make_default_sasrec_transforms`` (one training case per user: the last max_len + 1 events).

Written (atomically, after every epoch) to ``--out``: per epoch the training loss, the training
seconds (the epoch's fit time, without the validation pass) and their running sum, validation
NDCG@10 / HR@10; the best epoch by validation NDCG@10 and the test metrics of its weights; the
training seconds at which each ``--levels`` value of validation NDCG@10 was first reached. Early
stopping: ``--patience`` epochs without a better validation NDCG@10.

This file imports nothing from recsys: it runs where only RePlay is installed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from replay.data import FeatureHint, FeatureType
from replay.data.nn import ParquetModule, TensorFeatureInfo, TensorSchema
from replay.nn.lightning import LightningModule
from replay.nn.lightning.optimizer import OptimizerFactory
from replay.nn.sequential import SasRec
from replay.nn.transform.template import make_default_sasrec_transforms


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def ranking_metrics(
    model: SasRec, histories: list[np.ndarray], targets: np.ndarray, num_items: int, max_len: int, batch: int = 256
) -> dict[str, float]:
    """NDCG@10, HR@10 over every case: the target's rank among all items once the items of the
    user's whole history are removed (rank = 1 + items scored strictly higher)."""
    ndcg = hits = 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(targets), batch):
            rows = range(start, min(start + batch, len(targets)))
            seqs = torch.full((len(rows), max_len), num_items, dtype=torch.long)
            for i, r in enumerate(rows):
                h = histories[r][-max_len:]
                seqs[i, max_len - len(h) :] = torch.as_tensor(h)
            mask = seqs != num_items
            out = model(feature_tensors={"item_id": seqs}, padding_mask=mask)
            logits = out["logits"].float()  # [b, N]
            target = torch.as_tensor(targets[list(rows)])
            score = logits.gather(1, target[:, None])
            for i, r in enumerate(rows):  # seen items (the whole history) cannot be recommended
                logits[i, torch.as_tensor(histories[r])] = -torch.inf
            rank = 1 + (logits > score).sum(1)
            ndcg += float(torch.where(rank <= 10, 1.0 / torch.log2(rank.float() + 1), 0.0).sum())
            hits += float((rank <= 10).sum())
    model.train()
    n = max(len(targets), 1)
    return {"ndcg@10": ndcg / n, "hr@10": hits / n}


class Validate(L.Callback):
    """After every training epoch: time, validate, keep the best weights, stop early, write the record."""

    def __init__(self, args, val, record, out: Path):
        self.args, self.val, self.record, self.out = args, val, record, out
        self.best_state, self.best, self.bad = None, -1.0, 0
        self.epoch_start = 0.0
        self.losses: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_start = time.perf_counter()
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))

    def on_train_epoch_end(self, trainer, pl_module):
        seconds = time.perf_counter() - self.epoch_start
        histories, targets = self.val
        metrics = ranking_metrics(pl_module.model, histories, targets, self.args.num_items, self.args.max_len)
        epochs = self.record["epochs"]
        total = (epochs[-1]["train_seconds_total"] if epochs else 0.0) + seconds
        epochs.append({
            "epoch": trainer.current_epoch, "loss": float(np.mean(self.losses)), "train_seconds": seconds,
            "train_seconds_total": total, **{f"val/{k}": v for k, v in metrics.items()},
        })  # fmt: skip
        for level in self.args.levels:
            key = f"{level:g}"
            if self.record["time_to_level"].get(key) is None and metrics["ndcg@10"] >= level:
                self.record["time_to_level"][key] = {"train_seconds": total, "epoch": trainer.current_epoch}
        if metrics["ndcg@10"] > self.best:
            self.best, self.bad = metrics["ndcg@10"], 0
            self.best_state = copy.deepcopy(pl_module.model.state_dict())
            self.record["best_epoch"] = trainer.current_epoch
        else:
            self.bad += 1
            if self.bad >= self.args.patience:
                trainer.should_stop = True
        print(f"epoch {trainer.current_epoch}: loss {epochs[-1]['loss']:.4f} val ndcg@10 {metrics['ndcg@10']:.4f} "
              f"hr@10 {metrics['hr@10']:.4f} ({seconds:.1f} s, {total:.1f} s in all)", flush=True)
        write_json_atomic(self.out, self.record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("split_dir", type=Path, help="a folder written by scripts/peers/export_split.py")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-len", dest="max_len", type=int, default=200)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--max-seconds", dest="max_seconds", type=float, default=None,
                        help="stop once this much training time (without validation) has passed")
    parser.add_argument("--levels", type=lambda s: [float(v) for v in s.split(",")], default=[0.05, 0.1, 0.15])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    frame = pd.read_parquet(args.split_dir / "sequences.parquet")
    meta = json.loads((args.split_dir / "meta.json").read_text())
    args.num_items = N = int(meta["num_items"])
    train = [np.asarray(t, dtype=np.int64) for t in frame["train"]]
    val_rows = np.flatnonzero(frame["val_target"].to_numpy() >= 0)
    val = ([train[r] for r in val_rows], frame["val_target"].to_numpy()[val_rows])
    test_rows = np.flatnonzero(frame["test_target"].to_numpy() >= 0)
    test_hist = [
        np.concatenate([train[r], [frame["val_target"].iat[r]]]) if frame["val_target"].iat[r] >= 0 else train[r]
        for r in test_rows
    ]
    test = (test_hist, frame["test_target"].to_numpy()[test_rows])

    L.seed_everything(args.seed)
    schema = TensorSchema([
        TensorFeatureInfo(name="item_id", is_seq=True, padding_value=N, cardinality=N, embedding_dim=args.dim,
                          feature_type=FeatureType.CATEGORICAL, feature_hint=FeatureHint.ITEM_ID),
    ])  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="replay_sasrec_"))
    trainable = [(u, t) for u, t in zip(frame["user"], train, strict=True) if len(t) >= 2]
    pd.DataFrame({"user_id": [u for u, _ in trainable], "item_id": [t for _, t in trainable]}).to_parquet(
        workdir / "train.parquet"
    )
    data = ParquetModule(
        batch_size=args.batch_size,
        metadata={"train": {"item_id": {"shape": args.max_len + 1, "padding": N}}},
        transforms=make_default_sasrec_transforms(schema),
        train_path=str(workdir / "train.parquet"),
    )
    model = SasRec.from_params(
        schema=schema, embedding_dim=args.dim, num_heads=args.heads, num_blocks=args.blocks,
        max_sequence_length=args.max_len, dropout=args.dropout,
    )  # fmt: skip
    module = LightningModule(model, optimizer_factory=OptimizerFactory(learning_rate=args.lr))
    record = {
        "system": "RePlay SasRec",
        "replay_version": __import__("replay").__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": meta,
        "train_cases": len(trainable),
        "epochs": [],
        "time_to_level": {f"{level:g}": None for level in args.levels},
        "best_epoch": None,
    }
    validate = Validate(args, val, record, args.out)
    callbacks = [validate]
    trainer = L.Trainer(
        max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
        limit_val_batches=0, num_sanity_val_steps=0,  # validation is the callback's (full ranking)
        max_time=None if args.max_seconds is None else {"seconds": args.max_seconds},
    )  # fmt: skip
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    record["fit_seconds"] = time.perf_counter() - started
    model.load_state_dict(validate.best_state)
    record["val_best"] = max((e["val/ndcg@10"] for e in record["epochs"]), default=math.nan)
    record["test"] = ranking_metrics(model, *test, N, args.max_len)
    print(f"best epoch {record['best_epoch']}: test ndcg@10 {record['test']['ndcg@10']:.4f} hr@10 {record['test']['hr@10']:.4f}")
    write_json_atomic(args.out, record)


if __name__ == "__main__":
    main()
