"""Under load: several ``recsys train`` processes at once on one cache, each with a folder of its
own; a run that diverges stops with status ``diverged`` and keeps its last finite checkpoint; a
sweep counts it as failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY, assert_one_error_line, run_recsys, tiny_datamodule
from pytorch_lightning.callbacks import Callback

from recsys_cli.training.callbacks import AtomicCheckpointIO, SweepSummary, take_sweep_outcomes
from recsys_cli.training.divergence import Diverged

FAST = [a for a in TINY if not a.startswith("trainer.max_epochs")] + ["trainer.max_epochs=1", "scales=none"]


@pytest.mark.slow  # about a minute on 2 cores: three processes each import torch and train
def test_runs_started_together_each_complete_in_their_own_folder(tmp_path):
    """Three processes at once, one fresh cache (they prepare it together), and one run-folder
    name for all (``unique_dir`` of the same base, as three runs started in the same second get):
    every run completes with its own folder, metrics and checkpoints."""
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    argv = [sys.executable, "-m", "recsys_cli.cli", "train", *FAST, f"paths.cache_dir={cache}",
            f"hydra.run.dir=${{unique_dir:{runs / 'same'}}}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen([*argv, f"seed={seed}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in (1, 2, 3)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in out + err
    folders = sorted(p.name for p in runs.iterdir())
    assert folders == ["same", "same_2", "same_3"]
    seeds = set()
    for name in folders:
        run = runs / name
        report = json.loads((run / "metrics.json").read_text())
        assert report["status"] == "ok" and 0 <= report["test"]["ndcg@10"] <= 1
        for ckpt in ("best.ckpt", "last.ckpt"):
            saved = torch.load(run / "checkpoints" / ckpt, weights_only=True)
            seeds.add(saved["recsys"]["config"]["seed"])
        assert (run / "logs" / "metrics.csv").is_file() and (run / "config.yaml").is_file()
    assert seeds == {1, 2, 3}  # each folder holds one run, each run one folder
    prepared = [p.name for p in cache.iterdir()]
    assert len(prepared) == 1 and prepared[0].startswith("synthetic-"), prepared  # one cache, no leftovers


def test_a_run_that_diverges_exits_non_zero_with_status_diverged(tmp_path, cache_dir):
    run = tmp_path / "run"
    result = run_recsys(["train", *FAST, "optimizer.lr=1e6", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run}"])
    line = assert_one_error_line(result, "training diverged at step", "(epoch 0)", "the training loss is nan",
                                 "lower optimizer.lr (now 1000000.0", "trainer.gradient_clip_val")  # fmt: skip
    report = json.loads((run / "metrics.json").read_text())
    assert report["status"] == "diverged" and report["error"] == line.removeprefix("error: ")
    assert report["diverged_at"]["epoch"] == 0 and report["diverged_at"]["loss"] == "nan"
    assert report["checkpoints_kept"] == [] and "no checkpoint was written before it" in line


class Poison(Callback):
    """Sets one weight to NaN after training batch ``batch`` of epoch ``epoch`` (a divergence)."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


@pytest.mark.parametrize(("batch", "caught"), [(2, "the training loss is nan"), (-1, "the weights are no longer finite")])
def test_a_divergence_keeps_the_last_finite_checkpoint(tmp_path, batch, caught):
    """NaN weights in epoch 1: in mid-epoch the next loss stops the run; after the epoch's last
    batch the weight check before validation and checkpoints does. Either way last.ckpt and
    best.ckpt still hold epoch 0's finite weights."""
    from recsys_cli.builders import build_module, build_trainer

    cfg, dm = tiny_datamodule(tmp_path, "trainer.max_epochs=3", "scales=none")
    module = build_module(cfg, dm, {})
    trainer = build_trainer(cfg, tmp_path)
    batches = len(dm.train_dataloader())
    trainer.callbacks.insert(0, Poison(1, batch % batches))
    with pytest.raises(Diverged, match=rf"^training diverged at step \d+ \(epoch 1\): {caught}") as err:
        trainer.fit(module, datamodule=dm)
    assert err.value.where["epoch"] == 1
    for name in ("last.ckpt", "best.ckpt"):
        kept = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert kept["epoch"] == 0
        assert all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())


def test_nan_weights_never_replace_a_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, path)
    before = path.read_bytes()
    with pytest.raises(Diverged, match=r"NaN values \(w\)"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan"), 2.0])}, "epoch": 1}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_sweep_counts_a_diverged_job_as_failed(tmp_path, capsys):
    from omegaconf import OmegaConf

    for job, report in (("0", {"status": "ok", "val": {"ndcg@10": 0.2}, "test": {"ndcg@10": 0.1}}),
                        ("1", {"status": "diverged", "error": "training diverged at step 3 (epoch 0)", "val": {}, "test": {}})):  # fmt: skip
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={'0.001' if job == '0' else '1e6'}\n")
        (tmp_path / job / "metrics.json").write_text(json.dumps(report))
    take_sweep_outcomes()
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "optimized_metric": "val/ndcg@10"}))
    assert take_sweep_outcomes() == [(2, 1, tmp_path / "summary.csv")]
    assert "2 jobs, 1 failed (1 diverged)" in capsys.readouterr().out
    table = (tmp_path / "summary.md").read_text()
    assert "| 1 | 1e6 | diverged |" in table and "training diverged at step 3" in table


def test_a_sweep_with_a_diverging_job_ends_with_an_error_line(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    result = run_recsys(["train", "-m", *FAST, "optimizer.lr=1e-3,1e6", f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}"])
    assert_one_error_line(result, "1 of 2 jobs of the sweep failed")
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "ok"
    assert json.loads((sweep / "1" / "metrics.json").read_text())["status"] == "diverged"
    assert Path(sweep / "summary.csv").read_text().count("diverged") >= 1
