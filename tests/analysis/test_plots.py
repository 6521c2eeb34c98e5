"""The pictures of a run: valid PNG files, each drawn from numbers equal to the run's
``metrics.json`` and ``logs/metrics.csv``; a picture that cannot be drawn is one warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars
import pytest
from conftest import TINY, run_recsys

from recsys_cli.analysis import plots

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("plots") / "run"
    result = run_recsys(["train", *TINY, "trainer.max_epochs=3", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"])
    assert result.code == 0, result.err[-3000:]
    return run_dir


def report(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_every_run_writes_its_pictures_as_png_files(run):
    names = sorted(p.name for p in (run / "plots").iterdir())
    assert names == ["learning_curves.png", "metrics_by_bucket.png", "metrics_by_k.png", "scale_weights.png"]
    for path in (run / "plots").iterdir():
        assert path.read_bytes()[:8] == PNG, path


def test_learning_curves_are_the_logged_numbers(run):
    data = plots.learning_curve_data(run / "logs" / "metrics.csv")
    logged = polars.read_csv(run / "logs" / "metrics.csv")
    epochs = report(run)["epochs"]
    val = logged.filter(polars.col("val/ndcg@10").is_not_null()).group_by("epoch", maintain_order=True).first()
    expected_val = {e: v for e, v in zip(val["epoch"], val["val/ndcg@10"], strict=True) if e < epochs}
    assert data["val"] == pytest.approx(expected_val) and len(expected_val) == epochs == 3
    loss = logged.filter(polars.col("train/loss_epoch").is_not_null())
    assert data["train"]["loss"] == pytest.approx(dict(zip(loss["epoch"], loss["train/loss_epoch"], strict=True)))
    assert set(data["train"]) >= {"loss", "next_item"}
    fig = plots.learning_curves_figure(data)
    curve = fig.axes[1].lines[0]
    assert list(curve.get_xdata()) == sorted(expected_val)
    assert list(curve.get_ydata()) == pytest.approx([expected_val[e] for e in sorted(expected_val)])
    drawn = {line.get_label(): list(line.get_ydata()) for line in fig.axes[0].lines}
    assert drawn["next_item"] == pytest.approx([data["train"]["next_item"][e] for e in range(3)])


def test_scale_weights_metrics_by_k_and_buckets_are_the_reported_numbers(run):
    result = report(run)
    weights = plots.scale_weight_data(result)
    fig = plots.scale_weights_figure(weights)
    for line in fig.axes[0].lines:
        assert list(line.get_ydata()) == pytest.approx([e[line.get_label()] for e in result["scale_weights"]])
    assert len(fig.axes[0].lines) == len(result["scale_weights"][0]) - 1  # every scale, no epoch

    by_k = plots.metrics_by_k_data(result)
    fig = plots.metrics_by_k_figure(by_k)
    for line in fig.axes[0].lines:
        name = line.get_label().removesuffix("@K")
        assert list(line.get_ydata()) == pytest.approx([result["test"][f"{name}@{k}"] for k in (1, 5, 10, 20)])

    buckets = plots.bucket_data(result)
    fig = plots.bucket_figure(buckets)
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    expected = [result["test"][f"{b}/{m}@10"] for m in ("ndcg", "hr") for b in buckets]
    assert heights == pytest.approx(expected)
    assert all(buckets[b]["cases"] == result["test"][f"{b}/cases"] for b in buckets)


def test_the_files_are_drawn_from_the_data_functions(run, tmp_path, monkeypatch):
    seen = []
    real = plots.metrics_by_k_figure
    monkeypatch.setattr(plots, "metrics_by_k_figure", lambda data: seen.append(data) or real(data))
    written = plots.draw_run(run, tmp_path)
    assert seen == [plots.metrics_by_k_data(report(run))]
    assert {p.name for p in written} == {p.name for p in (run / "plots").iterdir()}


def test_a_picture_that_fails_is_one_warning_line(caplog):
    def broken():
        raise ValueError("no data\nsecond line")

    with caplog.at_level(logging.WARNING):
        assert plots.draw_quietly("runs/x", broken) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no data" in warnings[0].getMessage() and "\n" not in warnings[0].getMessage()
