"""Run folders: unique names taken atomically, one run per folder (refused, resumed or replaced
with overwrite=true), the other ranks of a DDP run joining the first one's folder, and a
checkpoint's run folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY, assert_one_error_line, run_recsys

from recsys_cli.errors import ConfigError
from recsys_cli.run_folders import (
    CLAIM,
    check_run_folder,
    claim_run_folder,
    forget_claimed_dirs,
    release_claim,
    run_contents,
    run_folder_of,
    unique_dir,
)

FAST = [a for a in TINY if not a.startswith("trainer.max_epochs")] + ["trainer.max_epochs=1", "scales=none"]


def fake_run(folder: Path) -> dict[str, bytes]:
    """A folder with what a finished run leaves (the files' bytes, to check they stay untouched)."""
    (folder / "checkpoints").mkdir(parents=True)
    files = {"config.yaml": b"seed: 1\n", "metrics.json": b'{"status": "ok"}\n', "checkpoints/best.ckpt": b"weights"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_processes_started_together_each_take_their_own_folder(tmp_path):
    base = tmp_path / "runs" / "2026-01-01" / "12-00-00"
    code = f"from recsys_cli.run_folders import unique_dir; print(unique_dir({str(base)!r}))"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(6)]
    taken = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(taken) == sorted([str(base)] + [f"{base}_{n}" for n in range(2, 7)])
    assert all(Path(t).is_dir() for t in taken)


def test_a_name_gives_one_folder_per_run_in_a_process(tmp_path):
    forget_claimed_dirs()
    base = str(tmp_path / "sweep")
    first = unique_dir(base)
    assert unique_dir(base) == first == base  # a multirun resolves its folder once per job
    forget_claimed_dirs()  # the next run of this process
    assert unique_dir(base) == f"{base}_2"
    forget_claimed_dirs()


def test_a_folder_holding_a_run_is_refused_before_hydra_writes_there(tmp_path):
    run = tmp_path / "run"
    files = fake_run(run)
    result = run_recsys(["train", *FAST, f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"])
    assert_one_error_line(result, f"hydra.run.dir={run} already holds a run", "config.yaml", "metrics.json",
                          f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "overwrite=true")  # fmt: skip
    assert not (run / ".hydra").exists() and not (run / "train.log").exists()
    assert {name: (run / name).read_bytes() for name in files} == files
    assert not (tmp_path / "cache").exists()  # refused before preparation


@pytest.mark.parametrize("found", ["config.yaml", "metrics.json", "checkpoints/last.ckpt"])
def test_any_file_of_a_run_makes_it_a_run(tmp_path, found):
    (tmp_path / found).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / found).write_text("x")
    assert run_contents(tmp_path) == [found]
    with pytest.raises(ConfigError, match="already holds a run"):
        check_run_folder(tmp_path, overwrite=False, resumes=None)
    check_run_folder(tmp_path, overwrite=True, resumes=None)  # overwrite=true: allowed
    check_run_folder(tmp_path / "other", overwrite=False, resumes=None)  # a new folder: allowed


def test_resuming_a_run_into_its_own_folder_is_allowed_and_another_run_is_not(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    fake_run(run)
    fake_run(other)
    check_run_folder(run, overwrite=False, resumes=str(run / "checkpoints" / "last.ckpt"))
    with pytest.raises(ConfigError, match="already holds a run"):
        check_run_folder(run, overwrite=False, resumes=str(other / "checkpoints" / "last.ckpt"))


def test_a_live_claim_excludes_a_second_run_and_a_dead_one_does_not(tmp_path):
    claim_run_folder(tmp_path, overwrite=False, resumes=None)  # this process: alive
    owner = json.loads((tmp_path / CLAIM).read_text())
    assert owner["pid"] > 0 and owner["host"]
    with pytest.raises(ConfigError, match=r"already holds a run \(\.recsys-run\)"):
        claim_run_folder(tmp_path, overwrite=False, resumes=None)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / CLAIM).write_text(json.dumps({**owner, "pid": int(finished.stdout)}))
    assert run_contents(tmp_path) == []  # a run that died before writing anything leaves a free folder
    claim_run_folder(tmp_path, overwrite=False, resumes=None)
    release_claim(tmp_path)
    assert not (tmp_path / CLAIM).exists()


def test_a_run_that_fails_before_writing_gives_its_folder_back(tmp_path):
    run = tmp_path / "run"
    result = run_recsys(["train", *FAST, "metrics.ks=[10,1000]", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"])
    assert_one_error_line(result, "metrics.ks", "K=1000")  # found after preparation, in the claimed folder
    assert run.is_dir() and run_contents(run) == [] and not (run / CLAIM).exists()


def test_overwrite_replaces_the_run_in_the_folder(tmp_path):
    run = tmp_path / "run"
    fake_run(run)
    (run / "evaluations").mkdir()
    (run / "evaluations" / "old-test.json").write_text("{}")
    result = run_recsys(["train", *FAST, "overwrite=true", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"])
    assert result.code == 0, result.err[-3000:]
    assert "overwrite=true: replacing the run in" in result.out
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"
    assert torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["recsys"]["config"]["overwrite"] is True
    assert not (run / "evaluations").exists()  # they evaluated the replaced checkpoint


def test_other_ranks_of_a_ddp_run_join_the_first_ones_folder(tmp_path, monkeypatch):
    """Lightning's DDP launcher re-runs the command with hydra.run.dir set to the first process's
    folder (LOCAL_RANK set), as torchrun and srun give every rank the same folder (RANK,
    SLURM_PROCID): the first process has already written there, the others must not refuse it."""
    from recsys_cli.commands.train import check_train_args

    fake_run(tmp_path / "run")
    argv = [*FAST, f"hydra.run.dir={tmp_path / 'run'}"]
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        check_train_args(argv)
    for name in ("LOCAL_RANK", "RANK", "SLURM_PROCID"):
        monkeypatch.setenv(name, "1")
        check_train_args(argv)
        monkeypatch.setenv(name, "0")
    with pytest.raises(ConfigError, match="already holds a run"):
        check_train_args(argv)


def test_a_sweep_folder_holding_jobs_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    fake_run(sweep / "0")
    result = run_recsys(["train", "-m", *FAST, "seed=1,2", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"])
    assert_one_error_line(result, f"hydra.sweep.dir={sweep} already holds a sweep (jobs 0)", "overwrite=true")
    assert not (sweep / "1").exists()


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("run/checkpoints/best.ckpt", "run"),  # what recsys writes
        ("run/best.ckpt", "run"),  # moved up beside config.yaml
        ("loose/model.ckpt", None),  # copied out of its run
    ],
)
def test_the_run_folder_of_a_checkpoint(tmp_path, where, expected):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("seed: 1\n")
    (tmp_path / "loose").mkdir()
    found = run_folder_of(tmp_path / where)
    assert found == (None if expected is None else (tmp_path / expected).resolve())
