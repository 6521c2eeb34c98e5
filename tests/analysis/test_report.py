"""``recsys report``: every picture of the given runs and sweeps in one folder, and one page that
embeds them with the summary table; ``recsys compare`` on the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import polars
import pytest
import yaml
from conftest import assert_one_error_line, run_recsys

from recsys_cli.analysis.cases import write_cases_file

PNG = b"\x89PNG\r\n\x1a\n"


def fake_run(folder: Path, ndcg: float, seed: int = 1, overrides: list[str] | None = None) -> Path:
    """A finished run folder as recsys train leaves it (metrics.json, logs/metrics.csv, cases)."""
    (folder / "logs").mkdir(parents=True)
    test = {f"{m}@{k}": ndcg * k / 10 for m in ("ndcg", "hr", "mrr") for k in (5, 10)}
    test |= {"head/cases": 90, "head/ndcg@10": ndcg, "head/hr@10": 2 * ndcg, "rare/cases": 10, "rare/ndcg@10": 0.0, "rare/hr@10": 0.0}
    report = {"status": "ok", "epochs": 2, "val": {"ndcg@10": ndcg + 0.01}, "test": test,
              "scale_weights": [{"epoch": 0, "day": 0.4, "all": 0.6}, {"epoch": 1, "day": 0.5, "all": 0.5}]}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(report))
    (folder / "logs" / "metrics.csv").write_text(
        "epoch,step,train/loss_epoch,train/next_item,val/ndcg@10\n0,5,7.0,7.0,\n0,5,,,0.05\n1,11,6.0,6.0,\n1,11,,,0.07\n"
    )
    if overrides is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    ranks = np.random.default_rng(seed).integers(0, 200, 100)
    frame = polars.DataFrame({"user": np.arange(100), "user_id": [str(u) for u in range(100)], "item": np.arange(1, 101),
                              "item_id": [str(i) for i in range(1, 101)], "rank": ranks})  # fmt: skip
    write_cases_file(folder / "test_cases.parquet", frame, {"stage": "test", "num_items": 200, "ks": [5, 10]})
    return folder


def test_report_draws_runs_and_sweeps_into_one_folder_and_page(tmp_path):
    run = fake_run(tmp_path / "a_run", 0.11)
    sweep = tmp_path / "sweep"
    for job, (scales, seed, ndcg) in enumerate([("none", 1, 0.10), ("none", 2, 0.12), ("all", 1, 0.13), ("all", 2, 0.15)]):
        fake_run(sweep / str(job), ndcg, overrides=[f"scales={scales}", f"seed={seed}"])
    out = tmp_path / "out"
    result = run_recsys(["report", str(run), str(sweep), f"output={out}"])
    assert result.code == 0, result.err[-2000:]
    assert f"Report: {out / 'report.html'}" in result.out
    pictures = sorted(out.rglob("*.png"))
    assert len(pictures) == 4 + 1 + 4 * 4  # the run's four, the sweep's chart, each job's four
    assert all(p.read_bytes()[:8] == PNG for p in pictures)
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(pictures)  # embedded: one file to send
    assert "0.1100 ± 0.0141" in page  # scales=none: mean and std over its two seeds
    with open(out / "summary.csv") as handle:
        rows = {row["run"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"a_run", "sweep/0", "sweep/1", "sweep/2", "sweep/3"}
    assert float(rows["sweep/3"]["test/ndcg@10"]) == pytest.approx(0.15)
    assert float(rows["a_run"]["val/ndcg@10"]) == pytest.approx(0.12)


def test_report_refuses_what_is_not_a_run_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_error_line(run_recsys(["report", str(tmp_path / "empty"), f"output={tmp_path / 'o'}"]), "neither a run folder")
    assert_one_error_line(run_recsys(["report", str(tmp_path / "missing")]), "no such run")
    assert_one_error_line(run_recsys(["report", str(tmp_path), "colour=red"]), "unknown key 'colour'")


def test_compare_on_the_command_line_prints_and_writes_json(tmp_path):
    a, b = fake_run(tmp_path / "a", 0.1, seed=1), fake_run(tmp_path / "b", 0.1, seed=2)
    out = tmp_path / "cmp.json"
    result = run_recsys(["compare", str(a), str(b), "resamples=500", f"output={out}"])
    assert result.code == 0, result.err[-2000:]
    assert "ndcg@10" in result.out and "95% CI" in result.out
    written = json.loads(out.read_text())
    assert written["resamples"] == 500 and written["cases"] == 100
    assert [r["metric"] for r in written["rows"]][:3] == ["ndcg@10", "hr@10", "mrr@10"]


def test_compare_refuses_runs_of_other_cases_in_one_line(tmp_path):
    a = fake_run(tmp_path / "a", 0.1)
    b = fake_run(tmp_path / "b", 0.1)
    frame = polars.read_parquet(b / "test_cases.parquet").with_columns(polars.col("user") + 1)
    write_cases_file(b / "test_cases.parquet", frame, {"stage": "test", "num_items": 200, "ks": [5, 10]})
    assert_one_error_line(run_recsys(["compare", str(a), str(b)]), "tested on other cases", "same data and split")
    assert_one_error_line(run_recsys(["compare", str(a)]), "at least two runs")
