"""Every evaluation writes its per-case test results (user, target, rank): the file's metrics,
averaged, are the run's metrics (``metrics.json`` of ``recsys train``, the report of ``recsys
evaluate``), and its raw ids are the run's vocabularies."""

from __future__ import annotations

import json
from pathlib import Path

import polars
import pytest
from conftest import TINY, run_recsys

from recsys_cli.analysis.cases import CASES_FILE, find_cases, mean_metrics, read_cases


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("cases") / "run"
    result = run_recsys(["train", *TINY, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"])
    assert result.code == 0, result.err[-3000:]
    return run_dir


def assert_same_metrics(from_cases: dict, reported: dict) -> None:
    shared = [key for key in reported if key in from_cases]
    assert len(shared) >= 16  # hr/ndcg/mrr/recall at every K, and the buckets'
    for key in shared:
        assert from_cases[key] == pytest.approx(reported[key], rel=1e-9, abs=1e-12), key
    assert set(from_cases) - set(reported) == set(), "a metric of the file is missing from the report"


def test_train_writes_one_row_per_test_case_whose_mean_is_the_reported_metrics(run):
    frame, meta = read_cases(run / CASES_FILE)
    report = json.loads((run / "metrics.json").read_text())
    assert meta["stage"] == "test" and meta["ks"] == [1, 5, 10, 20]
    assert len(frame) == sum(report["test"][f"{b}/cases"] for b in ("cold", "rare", "head"))
    assert frame["rank"].max() < meta["num_items"] + 1 and frame["rank"].min() >= 0
    assert_same_metrics(mean_metrics(frame, meta["ks"]), report["test"])
    # ranks beyond the largest K are kept exactly, not capped
    assert frame["rank"].max() > max(meta["ks"])
    assert frame.select(["user", "item"]).is_duplicated().sum() == 0
    assert frame["user"].to_list() == sorted(frame["user"].to_list())


def test_raw_ids_are_the_runs_vocabularies(run):
    frame, _ = read_cases(run / CASES_FILE)
    users = dict(polars.read_parquet(run / "vocab" / "users.parquet").iter_rows())
    items = dict(polars.read_parquet(run / "vocab" / "items.parquet").select(["index", "item_id"]).iter_rows())
    assert [users[u] for u in frame["user"].to_list()] == frame["user_id"].to_list()
    assert [items[i] for i in frame["item"].to_list()] == frame["item_id"].to_list()


def test_evaluate_writes_the_cases_beside_its_report_with_the_same_ranks(run):
    result = run_recsys(["evaluate", f"ckpt={run / 'checkpoints' / 'best.ckpt'}"])
    assert result.code == 0, result.err[-3000:]
    report_path = Path(next(line for line in result.out.splitlines() if line.startswith("Report: ")).removeprefix("Report: "))
    cases = report_path.with_name(report_path.name.replace("-test.json", "-test_cases.parquet"))
    assert cases.is_file()
    frame, meta = read_cases(cases)
    report = json.loads(report_path.read_text())
    assert_same_metrics(mean_metrics(frame, meta["ks"]), report["results"]["all scales"])
    trained, _ = read_cases(run / CASES_FILE)
    assert frame.equals(trained)
    # the run folder's own file (from training) is preferred to evaluations
    assert find_cases(run) == run / CASES_FILE


def test_a_validation_evaluation_writes_no_cases(run, tmp_path):
    result = run_recsys(["evaluate", f"ckpt={run / 'checkpoints' / 'best.ckpt'}", "stage=val", f"output_dir={tmp_path}"])
    assert result.code == 0, result.err[-3000:]
    assert list(tmp_path.glob("*.parquet")) == []
