"""scripts/time_signal.py on hand-built logs: gaps, ties and window counts computed by hand."""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
import pytest
from conftest import REPO

from recsys_cli.analysis.cases import write_cases_file

sys.path.insert(0, str(REPO / "scripts"))

from time_signal import gap_bucket, ndcg_by_gap, time_signal  # noqa: E402

DAY = 86_400


def test_gap_buckets_at_their_bounds():
    gaps = np.array([0, 1, 1800, 1801, DAY, DAY + 1, 30 * DAY, 30 * DAY + 1])
    assert gap_bucket(gaps).tolist() == [
        "same second", "<= 30 min", "<= 30 min", "<= 1 day", "<= 1 day", "<= 30 days", "<= 30 days", "> 30 days",
    ]  # fmt: skip


def test_statistics_of_a_hand_built_log():
    # user 0: events at 0, 0, 100, 100 + 40 days (test gap > 30 days)
    # user 1: events at 5, 5 (test gap 0: the same second)
    # user 2: one event (no test case)
    # user 3: events at 0, 2 days, 2 days + 600 s (test gap 600 s)
    times = np.array([0, 0, 100, 100 + 40 * DAY, 5, 5, 7, 0, 2 * DAY, 2 * DAY + 600])
    offsets = np.array([0, 4, 6, 7, 10])
    stats, users, gap = time_signal(offsets, times, max_len=200)
    assert users.tolist() == [0, 1, 3]
    assert gap.tolist() == [40 * DAY, 0, 600]
    assert stats["test_cases"] == 3
    assert stats["gap_share"] == pytest.approx(
        {"same second": 1 / 3, "<= 30 min": 1 / 3, "<= 1 day": 0, "<= 30 days": 0, "> 30 days": 1 / 3}
    )
    # consecutive pairs of one user: (0,0) (0,100) (100,..) | (5,5) | (0,2d) (2d,2d+600): 2 ties in 6
    assert stats["tied_consecutive_events"] == pytest.approx(2 / 6)
    # history before each target: user 0 [0, 0, 100] all 40 days back; user 1 [5] at 0 s;
    # user 3 [0, 2 days] 2 days + 600 s and 600 s back
    assert stats["history_events"] == pytest.approx((3 + 1 + 2) / 3)
    assert stats["history_in_window"]["30 min"] == pytest.approx((0 + 1 + 1) / 3)
    assert stats["history_in_window"]["1 day"] == pytest.approx((0 + 1 + 1) / 3)
    assert stats["history_in_window"]["30 days"] == pytest.approx((0 + 1 + 2) / 3)
    assert stats["history_within_30_days"] == pytest.approx(2 / 3)
    # max_len cuts the history read: user 0 reads only its newest event (100), 40 days back
    short, _, _ = time_signal(offsets, times, max_len=1)
    assert short["history_events"] == pytest.approx(1.0)


def test_ndcg_by_gap_reads_per_case_files_and_checks_their_targets(tmp_path):
    times = np.array([0, 10, 0, 5 * DAY])
    offsets = np.array([0, 2, 4])
    items = np.array([1, 2, 3, 4])
    _, users, gap = time_signal(offsets, times, max_len=10)
    run = tmp_path / "run"
    run.mkdir()
    # user 0 (gap 10 s) ranked its target first, user 1 (gap 5 days) third
    meta = {"stage": "test", "num_items": 4, "ks": [10]}
    write_cases_file(run / "test_cases.parquet", pl.DataFrame({"user": [0, 1], "item": [2, 4], "rank": [0, 2]}), meta)
    out = ndcg_by_gap([run], users, gap, items[offsets[1:] - 1])
    assert out["<= 30 min"] == {"ndcg@10": pytest.approx(1.0), "cases": 1}
    assert out["<= 30 days"] == {"ndcg@10": pytest.approx(1 / np.log2(4)), "cases": 1}
    assert out["all"]["ndcg@10"] == pytest.approx((1 + 1 / np.log2(4)) / 2)
    write_cases_file(run / "test_cases.parquet", pl.DataFrame({"user": [0, 1], "item": [1, 4], "rank": [0, 2]}), meta)
    with pytest.raises(SystemExit, match="row 0: its target is not the user's last event"):
        ndcg_by_gap([run], users, gap, items[offsets[1:] - 1])
