"""``recsys compare``'s statistics on planted per-case values: the paired-bootstrap interval
covers a known difference (and excludes 0 when it is large, includes 0 when there is none), the
t-test is scipy's paired one, Holm's correction by hand, and runs of other cases are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars
import pytest
from scipy import stats

from recsys_cli.analysis.cases import case_metric, write_cases_file
from recsys_cli.analysis.compare import bootstrap_means, compare, format_comparison, holm
from recsys_cli.errors import RecsysError

N_ITEMS = 500


def write_run(folder: Path, ranks: np.ndarray, users: np.ndarray | None = None) -> Path:
    """A run folder with a per-case file of ``ranks`` (and a metrics.json, as runs have)."""
    folder.mkdir(parents=True, exist_ok=True)
    users = np.arange(len(ranks)) if users is None else users
    frame = polars.DataFrame({
        "user": users, "user_id": [f"u{u}" for u in users], "item": (users % N_ITEMS) + 1,
        "item_id": [f"i{u % N_ITEMS + 1}" for u in users], "rank": ranks.astype(np.int64),
    })  # fmt: skip
    write_cases_file(folder / "test_cases.parquet", frame, {"stage": "test", "num_items": N_ITEMS, "ks": [10]})
    (folder / "metrics.json").write_text("{}")
    return folder


def planted(seed: int, n: int, lift: float) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of runs A and B: A hits the top 10 with probability 0.2; B keeps A's hits and turns
    each miss into a hit with probability ``lift`` (expected HR@10 difference ``0.8 * lift``)."""
    rng = np.random.default_rng(seed)
    a = np.where(rng.random(n) < 0.2, rng.integers(0, 10, n), rng.integers(10, N_ITEMS, n))
    b = np.where((a >= 10) & (rng.random(n) < lift), rng.integers(0, 10, n), a)
    return a, b


def row(result: dict, metric: str, run: str | None = None) -> dict:
    return next(r for r in result["rows"] if r["metric"] == metric and (run is None or r["run"] == run))


def test_the_interval_covers_a_planted_difference_and_excludes_zero(tmp_path):
    a, b = planted(0, 3000, lift=0.1)
    result = compare([str(write_run(tmp_path / "a", a)), str(write_run(tmp_path / "b", b))], resamples=4000)
    hr = row(result, "hr@10")
    assert hr["ci_low"] < 0.08 < hr["ci_high"]  # the planted (expected) difference
    assert hr["ci_low"] > 0  # a large difference: 0 is outside
    observed = case_metric(b, "hr", 10).mean() - case_metric(a, "hr", 10).mean()
    assert hr["difference"] == pytest.approx(observed, abs=1e-12)
    # the bootstrap's spread is the standard error of a mean of paired differences
    diff = case_metric(b, "hr", 10) - case_metric(a, "hr", 10)
    width = 2 * 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
    assert hr["ci_high"] - hr["ci_low"] == pytest.approx(width, rel=0.1)
    assert hr["p_ttest"] == pytest.approx(stats.ttest_rel(case_metric(b, "hr", 10), case_metric(a, "hr", 10)).pvalue, rel=1e-9)
    assert hr["p_ttest"] < 1e-6


def test_no_difference_gives_an_interval_around_zero(tmp_path):
    a, _ = planted(1, 3000, lift=0.0)
    b, _ = planted(2, 3000, lift=0.0)  # another run of the same quality: different cases hit
    result = compare([str(write_run(tmp_path / "a", a)), str(write_run(tmp_path / "b", b))], resamples=4000)
    for metric in ("ndcg@10", "hr@10", "mrr@10"):
        r = row(result, metric)
        assert r["ci_low"] < 0 < r["ci_high"], metric
        assert r["p_ttest"] > 0.05
    assert "excludes 0" in format_comparison(result)


def test_identical_runs_differ_by_nothing(tmp_path):
    a, _ = planted(3, 500, lift=0.0)
    result = compare([str(write_run(tmp_path / "a", a)), str(write_run(tmp_path / "b", a))], resamples=200)
    r = row(result, "ndcg@10")
    assert (r["difference"], r["ci_low"], r["ci_high"], r["p_ttest"]) == (0.0, 0.0, 0.0, 1.0)


def test_holm_by_hand():
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == [0.02]


def test_several_runs_are_each_compared_with_the_first_with_holm(tmp_path):
    a, b = planted(4, 1000, lift=0.05)
    _, c = planted(4, 1000, lift=0.02)
    runs = [str(write_run(tmp_path / name, r)) for name, r in (("a", a), ("b", b), ("c", c))]
    result = compare(runs, metrics=["hr@10"], resamples=500)
    rows = [row(result, "hr@10", run) for run in runs[1:]]
    assert [r["p_holm"] for r in rows] == pytest.approx(holm([r["p_ttest"] for r in rows]))
    assert "Holm" in result["test"] and "p (Holm)" in format_comparison(result)


def test_a_sweep_folder_is_its_runs_and_commas_average_seeds(tmp_path):
    a, b = planted(5, 800, lift=0.05)
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", a), write_run(sweep / "1", b)
    result = compare([str(sweep)], metrics=["hr@10"], resamples=300)
    assert [r["name"] for r in result["runs"]] == [f"{sweep}/0", f"{sweep}/1"]
    group = f"{sweep / '0'},{sweep / '1'}"
    averaged = compare([str(sweep / "0"), group], metrics=["hr@10"], resamples=300)
    expected = (case_metric(a, "hr", 10) + case_metric(b, "hr", 10)) / 2 - case_metric(a, "hr", 10)
    assert row(averaged, "hr@10")["difference"] == pytest.approx(expected.mean())


def test_runs_of_other_test_cases_are_refused(tmp_path):
    a, b = planted(6, 300, lift=0.0)
    write_run(tmp_path / "a", a)
    write_run(tmp_path / "b", b, users=np.arange(300) + 1)  # other users
    write_run(tmp_path / "c", b[:200])  # fewer cases
    for other in ("b", "c"):
        with pytest.raises(RecsysError, match="tested on other cases"):
            compare([str(tmp_path / "a"), str(tmp_path / other)], resamples=100)


def test_a_run_without_per_case_results_says_how_to_get_them(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text("{}")
    write_run(tmp_path / "a", planted(7, 50, 0.0)[0])
    with pytest.raises(RecsysError, match="recsys evaluate ckpt="):
        compare([str(tmp_path / "a"), str(tmp_path / "old")])


def test_bootstrap_means_are_resampled_means_whatever_the_chunks(monkeypatch):
    import recsys_cli.analysis.compare as module

    values = np.random.default_rng(0).random((50, 2))
    whole = bootstrap_means(values, 64, seed=3)
    monkeypatch.setattr(module, "BOOTSTRAP_ELEMENTS", 50 * 5)  # chunks of 5 resamples
    chunked = bootstrap_means(values, 64, seed=3)
    assert whole.shape == (64, 2) and np.allclose(whole.mean(axis=0), values.mean(axis=0), atol=0.05)
    assert np.allclose(chunked, whole)  # the same draws, whatever the chunk size
    rng = np.random.default_rng(3)
    first = values[rng.integers(0, 50, size=50)].mean(axis=0)  # the first resample, by hand
    assert np.allclose(whole[0], first)
