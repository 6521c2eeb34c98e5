"""Resuming a run: exactly, and without trusting what the checkpoint says.

- A run killed with SIGKILL mid-epoch (twice in its life) and resumed each time from ``last.ckpt``
  logs exactly the numbers, bit for bit, of the same run never interrupted; resumed in its own
  folder, its ``logs/metrics.csv`` keeps the epochs before the interruption (Lightning's CSV
  logger deleted them) and reads as the uninterrupted run's.
- The paths inside a checkpoint's callback state are never followed blindly: a best checkpoint
  named there is carried over only from the resumed checkpoint's own folder and only if it is a
  recsys checkpoint of the same model (else one warning line), every checkpoint is read
  weights-only, also with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_recsys
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.seed import isolate_rng
from torch import nn

from recsys_cli.training.callbacks import AtomicCheckpointIO, RandomState, RunCheckpoint
from recsys_cli.training.csv_log import CSVLogger

# -- bit-identical resume -----------------------------------------------------------------------

# runs ``recsys`` and kills itself with SIGKILL at the start of training batch KILL_AT=epoch:batch
KILLER = """
import os, signal, sys
from recsys_cli.training.module import RecommenderModule

at = os.environ.get("KILL_AT")
if at:
    epoch, batch = map(int, at.split(":"))
    step = RecommenderModule.training_step

    def killed_step(self, batch_, batch_idx):
        if self.current_epoch == epoch and batch_idx == batch:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self, batch_, batch_idx)

    RecommenderModule.training_step = killed_step
from recsys_cli.cli import main

main(sys.argv[1:])
"""


def logged_rows(run_dir: Path) -> list[dict[str, str]]:
    """Every row of the run's CSV log, with its empty cells and its wall-clock time (never the same
    twice; ``time/train_s``) dropped."""
    with open(run_dir / "logs" / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if v != "" and not k.startswith("time/")} for row in csv.DictReader(f)]


def row_key(row: dict[str, str]) -> tuple:
    return row["epoch"], row["step"], tuple(sorted(row))


def test_a_run_killed_mid_epoch_and_resumed_is_bit_identical(tmp_path, cache_dir):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    args = [a for a in TINY if not a.startswith("trainer.max_epochs")] + ["trainer.max_epochs=3", f"paths.cache_dir={cache_dir}"]

    def train(name: str, kill_at: str | None = None, resume: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "KILL_AT"} | ({"KILL_AT": kill_at} if kill_at else {})
        extra = [f"ckpt_path={tmp_path / resume / 'checkpoints' / 'last.ckpt'}"] if resume else []
        argv = [sys.executable, str(script), "train", *args, f"hydra.run.dir={tmp_path / name}", *extra]
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    whole = train("whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    # killed in the second epoch (the resume point is the end of the first), resumed and killed in
    # the third, resumed to the end: each resume replays the epoch that was cut
    first = train("first", kill_at="1:2")
    second = train("second", kill_at="2:1", resume="first")
    third = train("third", resume="second")
    assert first.returncode == second.returncode == -9, (first.stderr[-2000:], second.stderr[-2000:])
    assert third.returncode == 0, third.stderr[-3000:]

    reference = {row_key(row): row for row in logged_rows(tmp_path / "whole")}
    covered = set()
    for name, replayed_from in (("first", 0), ("second", 1), ("third", 2)):
        rows = logged_rows(tmp_path / name)
        assert min(int(row["epoch"]) for row in rows) == replayed_from, name
        for row in rows:
            assert row == reference.get(row_key(row)), (name, row)  # every value, as logged
            covered.add(row_key(row))
    assert covered == set(reference)  # every logged row of the uninterrupted run was repeated

    # resumed in its own folder, the run keeps the rows logged before it was killed: its log is
    # the uninterrupted run's, row for row
    own = train("own", kill_at="1:2")
    assert own.returncode == -9, own.stderr[-2000:]
    cut = logged_rows(tmp_path / "own")
    assert {row["epoch"] for row in cut} == {"0"}  # what was on disk when it was killed
    own = train("own", resume="own")
    assert own.returncode == 0, own.stderr[-3000:]
    assert logged_rows(tmp_path / "own") == logged_rows(tmp_path / "whole")

    ran, resumed = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("whole", "third"))
    assert resumed["val"] == ran["val"] and resumed["test"] == ran["test"]  # the printed table's numbers
    assert resumed["scale_weights"] == ran["scale_weights"] and resumed["epochs"] == ran["epochs"] == 3
    weights = [torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True) for name in ("whole", "third")]
    for key, value in weights[0]["state_dict"].items():
        assert torch.equal(value, weights[1]["state_dict"][key]), key


class _Part(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)


class _Term:
    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)


class _Module(nn.Module):
    """What RandomState looks at: model parts and objective terms owning a ``generator``."""

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(2, 2), _Part(1))
        self.objective = type("Objective", (), {"terms": {"next_item": _Term(2)}})()


def _draws(module: _Module) -> list:
    return [
        torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
        torch.rand(3, generator=module.model[1].generator).tolist(),
        torch.rand(3, generator=module.objective.terms["next_item"].generator).tolist(),
    ]  # fmt: skip


def test_random_state_restores_every_generator_from_a_weights_only_checkpoint(tmp_path):
    with isolate_rng():  # the global generators of this test process are left as they were
        module, saver = _Module(), RandomState()
        saver.setup(None, module, "fit")
        torch.save({"callbacks": {saver.state_key: saver.state_dict()}}, tmp_path / "state.ckpt")
        expected = _draws(module)
        _draws(module)  # the generators move on (or the run dies and starts again)

        restorer = RandomState()
        restorer.setup(None, module, "fit")
        restorer._resuming = True
        restorer.load_state_dict(torch.load(tmp_path / "state.ckpt", weights_only=True)["callbacks"][restorer.state_key])
        trainer = type("Trainer", (), {"train_dataloader": None, "val_dataloaders": None})()
        restorer.on_train_epoch_start(trainer, module)
        assert _draws(module) == expected


# -- checkpoints are data: paths checked, loads weights-only -------------------------------------


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, cache_dir) -> Path:
    """A two-epoch run, as if interrupted (a resume adds a third epoch)."""
    run_dir = tmp_path_factory.mktemp("interrupted") / "run"
    result = run_recsys(["train", *TINY, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"])
    assert result.code == 0, result.err[-3000:]
    return run_dir


class _Payload:
    """Unpickling it creates a folder: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


def crafted_run(interrupted: Path, where: Path, best_model_path: str) -> Path:
    """A copy of the interrupted run whose last.ckpt names ``best_model_path`` as its best
    checkpoint (it still loads with weights_only=True); returns the copy's last.ckpt."""
    run = where / "crafted"
    shutil.copytree(interrupted, run)
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    for state in ckpt["callbacks"].values():
        if state.get("monitor"):
            state["best_model_path"] = best_model_path.replace("RUN", str(run))
    torch.save(ckpt, last)
    return last


def resume(last: Path, run_dir: Path, cache_dir: Path, phrase: str = "ignored the best checkpoint") -> list[str]:
    """Resume ``last`` for a third epoch into ``run_dir``; the output lines containing ``phrase``."""
    args = [a for a in TINY if not a.startswith("trainer.max_epochs")]
    result = run_recsys(["train", *args, "trainer.max_epochs=3", f"ckpt_path={last}", f"hydra.run.dir={run_dir}",
                         f"paths.cache_dir={cache_dir}"])  # fmt: skip
    assert result.code == 0, result.err[-3000:]
    assert "Traceback" not in result.out + result.err
    return [line for line in (result.out + result.err).splitlines() if phrase in line]


def assert_own_best(run_dir: Path) -> None:
    report = json.loads((run_dir / "metrics.json").read_text())
    assert Path(report["best_checkpoint"]).parent == run_dir / "checkpoints"
    assert report["epochs"] == 3


def test_a_foreign_best_checkpoint_is_ignored(interrupted, tmp_path, cache_dir):
    last = crafted_run(interrupted, tmp_path, "RUN/checkpoints/foreign.ckpt")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, last.parent / "foreign.ckpt")  # another program's
    run_dir = tmp_path / "resumed"
    ignored = resume(last, run_dir, cache_dir)
    assert len(ignored) == 1 and "foreign.ckpt" in ignored[0] and "not a recsys checkpoint" in ignored[0], ignored
    assert not (run_dir / "checkpoints" / "foreign.ckpt").exists()
    assert_own_best(run_dir)


def test_a_best_checkpoint_outside_the_run_is_ignored(interrupted, tmp_path, cache_dir):
    last = crafted_run(interrupted, tmp_path, "/etc/hostname")
    run_dir = tmp_path / "resumed"
    ignored = resume(last, run_dir, cache_dir)
    assert len(ignored) == 1 and "/etc/hostname" in ignored[0] and "not in the folder of the checkpoint being resumed" in ignored[0]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # its own only
    assert_own_best(run_dir)


def carry(best_model_path: Path, resumed: Path, into: Path, caplog) -> tuple[RunCheckpoint, list[str]]:
    """What a RunCheckpoint writing to ``into`` takes over from the checkpoint ``resumed`` naming
    ``best_model_path`` (Lightning's calls, without the training around them)."""
    ckpt = torch.load(resumed, weights_only=True)
    callback = RunCheckpoint(dirpath=into, filename="best", monitor="val/ndcg@10", mode="max", save_top_k=1)
    trainer = type("Trainer", (), {"state": type("State", (), {"fn": TrainerFn.FITTING})(), "ckpt_path": str(resumed)})()
    state = next(dict(s) for s in ckpt["callbacks"].values() if s.get("monitor"))
    caplog.clear()
    callback.on_load_checkpoint(trainer, None, ckpt)
    callback.load_state_dict({**state, "best_model_path": str(best_model_path)})
    return callback, [r.getMessage() for r in caplog.records if "ignored the best checkpoint" in r.getMessage()]


def test_only_a_recsys_checkpoint_of_the_same_model_in_the_resumed_folder_is_carried(interrupted, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(interrupted, run)
    folder, last, new = run / "checkpoints", run / "checkpoints" / "last.ckpt", tmp_path / "new" / "checkpoints"
    elsewhere = tmp_path / "elsewhere" / "best.ckpt"  # another run's valid checkpoint
    elsewhere.parent.mkdir()
    shutil.copyfile(folder / "best.ckpt", elsewhere)
    (folder / "link.ckpt").symlink_to(elsewhere)
    other = torch.load(folder / "best.ckpt", weights_only=True)
    other["recsys"]["config"]["model"]["dim"] = 32
    torch.save(other, folder / "other_model.ckpt")

    for named, reason in [(elsewhere, "not in the folder"), (folder / "link.ckpt", "not in the folder"),
                          (folder / "other_model.ckpt", "another model"), (folder / "nope.ckpt", "no such file")]:  # fmt: skip
        callback, ignored = carry(named, last, new, caplog)
        assert len(ignored) == 1 and reason in ignored[0], (named, ignored)
        assert callback.best_model_path == "" and callback.best_model_score is None
    assert not new.exists() or not any(new.iterdir())  # nothing was copied (not even a temporary file left)
    # the run's own best checkpoint: copied into the new run's folder (checked there), or, resuming
    # into the same folder, used where it is
    callback, ignored = carry(folder / "best.ckpt", last, new, caplog)
    assert not ignored and callback.best_model_path == str(new / "best.ckpt")
    assert (new / "best.ckpt").read_bytes() == (folder / "best.ckpt").read_bytes()
    callback, ignored = carry(folder / "best.ckpt", last, folder, caplog)
    assert not ignored and callback.best_model_path == str(folder / "best.ckpt")
    assert callback.best_k_models == {str(folder / "best.ckpt"): callback.best_model_score}


def test_a_pickle_payload_never_runs_even_when_torch_is_told_to_unpickle(interrupted, tmp_path, cache_dir, monkeypatch):
    marker = tmp_path / "payload-ran"
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # what users set to load older checkpoints
    last = crafted_run(interrupted, tmp_path, "RUN/checkpoints/best.ckpt")
    torch.save({"recsys": _Payload(marker), "state_dict": {}}, last.parent / "best.ckpt")
    # the resume path: the best checkpoint it names is checked (weights-only) and ignored
    run_dir = tmp_path / "resumed"
    ignored = resume(last, run_dir, cache_dir)
    assert len(ignored) == 1 and "not a readable PyTorch checkpoint" in ignored[0], ignored
    assert not marker.exists()
    assert_own_best(run_dir)
    # every load Lightning makes goes through the checkpoint plugin, which is weights-only whatever it is asked
    with pytest.raises(Exception, match="(?i)weights.only"):
        AtomicCheckpointIO().load_checkpoint(last.parent / "best.ckpt", weights_only=False)
    assert not marker.exists()


def test_a_checkpoint_without_random_state_resumes_with_one_warning(interrupted, tmp_path, cache_dir):
    last = crafted_run(interrupted, tmp_path, "RUN/checkpoints/best.ckpt")
    ckpt = torch.load(last, weights_only=True)
    del ckpt["callbacks"]["RandomState"]  # as written by an older recsys
    torch.save(ckpt, last)
    assert len(resume(last, tmp_path / "resumed", cache_dir, phrase="no random generator state")) == 1
    assert_own_best(tmp_path / "resumed")


def test_the_csv_log_of_a_resumed_run_keeps_the_epochs_before_the_resume_and_not_the_repeated_one(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    header = "epoch,step,train/loss_step,val/ndcg@10\n"
    (logs / "metrics.csv").write_text(header + "0,4,7.5,\n0,4,,0.1\n1,9,6.5,\n1,9,,0.2\n2,11,6.1,\n")  # killed in epoch 2
    logger = CSVLogger(save_dir=str(tmp_path), name="logs", version="")
    logger.log_metrics({"train/loss_step": 6.0, "epoch": 2}, step=11)  # epoch 2 again, from its start
    logger.log_metrics({"val/ndcg@10": 0.3, "time/train_s": 3.0, "epoch": 2}, step=14)  # a column the file lacks
    logger.save()
    logger.log_metrics({"train/loss_step": 5.5, "epoch": 3}, step=15)
    logger.save()
    rows = [(r["epoch"], r["step"], r["train/loss_step"], r["val/ndcg@10"], r["time/train_s"]) for r in csv.DictReader(open(logs / "metrics.csv"))]
    assert rows == [
        ("0", "4", "7.5", "", ""), ("0", "4", "", "0.1", ""), ("1", "9", "6.5", "", ""), ("1", "9", "", "0.2", ""),
        ("2", "11", "6.0", "", ""), ("2", "14", "", "0.3", "3.0"), ("3", "15", "5.5", "", ""),
    ]  # fmt: skip
    assert not list(logs.glob(".*.tmp"))


def test_a_replaced_run_logs_from_epoch_zero_and_keeps_nothing_of_the_old_log(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.csv").write_text("epoch,step,val/ndcg@10\n0,4,0.1\n1,9,0.2\n")
    logger = CSVLogger(save_dir=str(tmp_path), name="logs", version="")
    logger.log_metrics({"val/ndcg@10": 0.05, "epoch": 0}, step=4)
    logger.save()
    assert (tmp_path / "logs" / "metrics.csv").read_text().splitlines() == ["epoch,step,val/ndcg@10", "0,4,0.05"]

