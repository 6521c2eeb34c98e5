"""scripts/convergence_table.py reads the product's run folders and RePlay's records alike: the
test metrics of the best epoch, time to a level from the logged training seconds, and the curves
at equal epochs and equal seconds."""

from __future__ import annotations

import csv
import importlib.util
import json

from conftest import REPO

spec = importlib.util.spec_from_file_location("convergence_table", REPO / "scripts" / "convergence_table.py")
table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table)

CURVE = [(0, 10.0, 0.02), (1, 20.0, 0.11), (2, 30.0, 0.16), (3, 40.0, 0.15)]  # epoch, seconds, NDCG


def product_run(folder, curve=CURVE, test=0.2):
    (folder / "logs").mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"test": {"ndcg@10": test, "hr@10": 2 * test}}))
    with open(folder / "logs" / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch", "step", "val/ndcg@10", "time/train_s", "train/loss_epoch"])
        writer.writeheader()
        for epoch, seconds, ndcg in curve:  # Lightning writes a row per logging call
            writer.writerow({"epoch": epoch, "step": epoch, "val/ndcg@10": ndcg})
            writer.writerow({"epoch": epoch, "step": epoch, "time/train_s": seconds, "train/loss_epoch": 1.0})
    return folder


def replay_record(path, curve=CURVE, test=0.1):
    epochs = [{"epoch": e, "train_seconds_total": s, "val/ndcg@10": v} for e, s, v in curve]
    path.write_text(json.dumps({"epochs": epochs, "best_epoch": 2, "test": {"ndcg@10": test, "hr@10": 0.3}}))
    return path


def test_both_sources_give_the_same_curve_and_best_epoch(tmp_path):
    product = table.read(str(product_run(tmp_path / "run")))
    replay = table.read(str(replay_record(tmp_path / "replay.json")))
    assert product["curve"] == replay["curve"] == CURVE
    assert product["best"] == replay["best"] == 2


def test_summary_over_seeds(tmp_path):
    slower = [(e, 2 * s, v) for e, s, v in CURVE]
    runs = [table.read(str(product_run(tmp_path / "a"))), table.read(str(product_run(tmp_path / "b", slower, 0.3)))]
    row = table.summary(runs)
    assert row["test NDCG@10"] == "0.2500 ± 0.0707"
    assert row["best epoch"] == "3.0 ± 0.0" and row["epochs run"] == "4.0 ± 0.0"
    assert row["s to best"] == "45 ± 21"  # 30 and 60 seconds
    assert row["s to 0.10"] == "30 ± 14" and row["s to 0.15"] == "45 ± 21"
    assert table.at_epochs(runs)[:2] == ["0.0200 ± 0.0000", "0.1600 ± 0.0000"]  # epochs 1 and 3
    # by 60 s the faster run had its best (0.16), the slower one its third epoch (0.16 at 60 s)
    assert table.at_seconds(runs)[0] == "0.1600 ± 0.0000"


def test_a_level_not_reached_by_every_run_says_how_many(tmp_path):
    low = [(e, s, v / 2) for e, s, v in CURVE]
    runs = [table.read(str(product_run(tmp_path / "a"))), table.read(str(product_run(tmp_path / "b", low)))]
    assert table.summary(runs)["s to 0.15"] == "30 (1/2)"


def test_a_run_in_progress_has_no_test_metrics(tmp_path):
    run = table.read(str(product_run(tmp_path / "a")))
    (tmp_path / "a" / "metrics.json").unlink()
    going = table.read(str(tmp_path / "a"))
    assert going["test"] is None and going["curve"] == run["curve"]
    assert table.summary([going])["test NDCG@10"] == "-"


def test_equal_seconds_wait_for_a_run_in_progress(tmp_path):
    product_run(tmp_path / "b", CURVE[:2])  # 20 s trained so far, still going
    (tmp_path / "b" / "metrics.json").unlink()
    runs = [table.read(str(product_run(tmp_path / "a"))), table.read(str(tmp_path / "b"))]
    assert table.at_seconds(runs)[table.SECONDS.index(60)] == "-"
    assert table.at_seconds(runs[:1])[table.SECONDS.index(60)] == "0.1600"  # finished at 40 s: its best
