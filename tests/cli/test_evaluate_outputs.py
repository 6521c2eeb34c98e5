"""Where ``recsys evaluate`` writes its report (the checkpoint's run folder, found by what it holds,
or ``output_dir`` / ``hydra.run.dir``), and what a resume from a checkpoint outside its run
folder says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY, assert_one_error_line, run_recsys


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("evaluated") / "run"
    result = run_recsys(["train", *TINY, "scales=none", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"])
    assert result.code == 0, result.err[-3000:]
    return run_dir


def evaluate(*argv: str) -> Path:
    """Run ``recsys evaluate argv``; the report it wrote (the path it printed)."""
    result = run_recsys(["evaluate", *argv])
    assert result.code == 0, result.err[-3000:]
    printed = [line.removeprefix("Report: ") for line in result.out.splitlines() if line.startswith("Report: ")]
    assert len(printed) == 1, result.out[-2000:]
    report = Path(printed[0])
    assert json.loads(report.read_text())["stage"] in ("val", "test")
    return report


def test_the_report_goes_to_the_checkpoints_run_folder(run):
    report = evaluate(f"ckpt={run / 'checkpoints' / 'best.ckpt'}")
    assert report.parent == run / "evaluations"


def test_a_checkpoint_outside_a_run_folder_reports_beside_itself_not_in_its_grandparent(run, tmp_path):
    loose = tmp_path / "shared" / "models" / "best.ckpt"
    loose.parent.mkdir(parents=True)
    shutil.copyfile(run / "checkpoints" / "best.ckpt", loose)
    report = evaluate(f"ckpt={loose}", "stage=val")
    assert report.parent == loose.parent / "evaluations"
    assert not (tmp_path / "shared" / "evaluations").exists()


@pytest.mark.parametrize("key", ["output_dir", "hydra.run.dir"])
def test_an_output_folder_can_be_given(run, tmp_path, key):
    before = set((run / "evaluations").glob("*.json")) if (run / "evaluations").exists() else set()
    report = evaluate(f"ckpt={run / 'checkpoints' / 'best.ckpt'}", f"{key}={tmp_path / 'reports'}")
    assert report.parent == tmp_path / "reports"
    after = set((run / "evaluations").glob("*.json")) if (run / "evaluations").exists() else set()
    assert after == before


def test_a_resume_names_the_runs_config_only_where_there_is_one(run, tmp_path, cache_dir):
    args = [a for a in TINY if not a.startswith("model.dim")] + ["scales=none", "model.dim=32", f"paths.cache_dir={cache_dir}"]
    inside = run_recsys(["train", *args, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'a'}"])
    assert_one_error_line(inside, "had model.dim=16", "resume with the run's value (model.dim=16)", f"{run / 'config.yaml'}")
    loose = tmp_path / "copied" / "last.ckpt"
    loose.parent.mkdir()
    shutil.copyfile(run / "checkpoints" / "last.ckpt", loose)
    outside = run_recsys(["train", *args, f"ckpt_path={loose}", f"hydra.run.dir={tmp_path / 'b'}"])
    line = assert_one_error_line(outside, "had model.dim=16", "(model.dim=16)")
    assert "config.yaml" not in line
