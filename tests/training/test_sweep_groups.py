"""Sweep summaries over seeds: the mean and standard deviation of every metric per
configuration (the swept values other than the seed), next to the per-run rows, and the sweep's
chart drawn from those numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from recsys_cli.analysis.plots import draw_sweep, sweep_chart_data, sweep_figure
from recsys_cli.analysis.sweeps import seed_groups
from recsys_cli.training.callbacks import sweep_rows, write_summary

# (scales, seed) -> test NDCG@10; job 5 failed
JOBS = [("none", 1, 0.110), ("all", 1, 0.118), ("none", 2, 0.112), ("all", 2, 0.121), ("none", 3, 0.111), ("all", 3, None)]


def make_sweep(root: Path) -> Path:
    for job, (scales, seed, ndcg) in enumerate(JOBS):
        folder = root / str(job)
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["+experiment=x", f"scales={scales}", f"seed={seed}"]))
        if ndcg is None:
            (folder / "metrics.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
        else:
            (folder / "metrics.json").write_text(json.dumps({"status": "ok", "val": {"ndcg@10": ndcg + 0.01}, "test": {"ndcg@10": ndcg}}))
    return root


def test_mean_and_std_per_configuration_by_hand(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    rows = sweep_rows(sweep)
    table = write_summary(sweep, rows, ["val/ndcg@10", "test/ndcg@10"])
    with open(sweep / "summary_by_config.csv") as handle:
        groups = {row["scales"]: row for row in csv.DictReader(handle)}
    none, all_ = np.array([0.110, 0.112, 0.111]), np.array([0.118, 0.121])
    assert float(groups["none"]["test/ndcg@10"]) == pytest.approx(none.mean())
    assert float(groups["none"]["test/ndcg@10 std"]) == pytest.approx(none.std(ddof=1))
    assert float(groups["all"]["test/ndcg@10"]) == pytest.approx(all_.mean())
    assert float(groups["all"]["test/ndcg@10 std"]) == pytest.approx(all_.std(ddof=1))
    assert (groups["all"]["runs"], groups["all"]["failed"], groups["all"]["seeds"]) == ("2", "1", "1,2")
    assert f"{none.mean():.4f} ± {none.std(ddof=1):.4f}" in table
    assert "2 (1 failed)" in table
    assert table.count("| none |") == 4  # three runs and their configuration
    assert (sweep / "summary.md").read_text() == table


def test_a_sweep_without_seeds_has_no_configuration_table(tmp_path):
    sweep = tmp_path / "sweep"
    for job, scales in enumerate(("none", "all")):
        (sweep / str(job) / ".hydra").mkdir(parents=True)
        (sweep / str(job) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"scales={scales}"]))
        (sweep / str(job) / "metrics.json").write_text(json.dumps({"status": "ok", "test": {"ndcg@10": 0.1 + job}}))
    rows = sweep_rows(sweep)
    assert seed_groups(rows) == []
    assert "seeds" not in write_summary(sweep, rows)
    assert not (sweep / "summary_by_config.csv").exists()
    data = sweep_chart_data(rows, [], "test/ndcg@10")
    assert data["labels"] == ["scales=none", "scales=all"] and data["mean"] == pytest.approx([0.1, 1.1])


def test_the_sweep_chart_draws_the_configurations_numbers(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    rows = sweep_rows(sweep)
    groups = seed_groups(rows)
    data = sweep_chart_data(rows, groups, "test/ndcg@10")
    assert data["labels"] == ["scales=none", "scales=all"]
    assert data["points"] == [pytest.approx([0.110, 0.112, 0.111]), pytest.approx([0.118, 0.121])]
    fig = sweep_figure(data)
    bars = [bar.get_height() for bar in fig.axes[0].patches]
    assert bars == pytest.approx([np.mean([0.110, 0.112, 0.111]), np.mean([0.118, 0.121])])
    path = draw_sweep(sweep, rows, groups, "test/ndcg@10")
    assert path == sweep / "sweep.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_end_of_a_multirun_writes_the_configuration_table_and_the_chart(tmp_path, capsys):
    from omegaconf import OmegaConf

    from recsys_cli.training.callbacks import SweepSummary, take_sweep_outcomes

    sweep = make_sweep(tmp_path / "sweep")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "optimized_metric": "val/ndcg@10"})
    SweepSummary().on_multirun_end(config)
    assert take_sweep_outcomes() == [(6, 1, sweep / "summary.csv")]
    assert (sweep / "summary_by_config.csv").is_file()
    assert (sweep / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Mean ± standard deviation over seeds" in capsys.readouterr().out
