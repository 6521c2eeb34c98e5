"""The ``recsys`` command end to end, in-process, on a tiny synthetic dataset.

train -> run directory and printed table; evaluate reproduces the test metrics from the checkpoint
alone; resume; multirun summaries (with a failing job); experiments; count baselines; every kind of
bad input gives one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import TINY, TINY_BASELINE, assert_one_error_line, run_recsys

from recsys_cli.compose import compose_train


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def printed_table(out: str) -> dict[str, list[float]]:
    """``{metric: [values...]}`` from the table the command printed."""
    rows = {}
    for line in out.splitlines():
        match = re.match(r"^((?:hr|ndcg|mrr|recall|coverage)@\d+)((?:\s+-?\d+\.\d{4})+)\s*$", line)
        if match:
            rows[match.group(1)] = [float(v) for v in match.group(2).split()]
    return rows


def latest_evaluation(run_dir: Path) -> dict:
    files = sorted((run_dir / "evaluations").glob("*.json"))
    assert files, f"no evaluation report in {run_dir}"
    return json.loads(files[-1].read_text())


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, cache_dir) -> tuple[Path, str]:
    """One default-model run (two epochs): its run directory and what it printed."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = run_recsys(["train", *TINY, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"])
    assert result.code == 0, result.err[-3000:]
    return run_dir, result.out


# -- train ------------------------------------------------------------------------------------------


def test_train_writes_the_run_directory_and_prints_the_table(trained_run):
    run_dir, out = trained_run
    for path in ("config.yaml", "vocab/items.parquet", "vocab/users.parquet", "checkpoints/best.ckpt",
                 "checkpoints/last.ckpt", "metrics.json", "logs/metrics.csv"):
        assert (run_dir / path).is_file(), path
    report = metrics_of(run_dir)
    assert report["status"] == "ok" and report["epochs"] == 2
    assert report["best_checkpoint"] == str(run_dir / "checkpoints" / "best.ckpt")
    # last.ckpt is rewritten after every epoch (the resume point), best.ckpt only when val improves
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1 and last["recsys"]["program"] == "recsys"
    assert re.search(r"^metric\s+val\s+test$", out, re.M), out[-2000:]
    table = printed_table(out)
    overall = {name for name in report["test"] if "/" not in name}  # the rest: cold/..., rare/..., head/...
    assert set(table) == overall == {name for name in report["val"] if "/" not in name}
    for name, (val, test) in table.items():
        assert val == pytest.approx(report["val"][name], abs=5e-5)
        assert test == pytest.approx(report["test"][name], abs=5e-5)
    assert f"recsys evaluate ckpt={run_dir / 'checkpoints' / 'best.ckpt'}" in out


def test_the_log_holds_the_training_seconds_of_every_epoch(trained_run):
    """time/train_s: training time summed up to each epoch's end, validation left out; it grows
    from epoch to epoch and stays below the run's whole fit time."""
    run_dir, _ = trained_run
    with open(run_dir / "logs" / "metrics.csv") as f:
        seconds = {int(row["epoch"]): float(row["time/train_s"]) for row in csv.DictReader(f) if row.get("time/train_s")}
    assert sorted(seconds) == [0, 1]
    assert 0 < seconds[0] < seconds[1] < metrics_of(run_dir)["train_seconds"]
    clock = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["TrainClock"]
    assert clock["seconds"] == pytest.approx(seconds[1])  # a resumed run goes on from here


def test_train_prints_a_progress_bar(recsys, tmp_path):
    result = recsys("train", *TINY_BASELINE, "model=popularity", "callbacks.progress_bar.refresh_rate=1",
                    f"hydra.run.dir={tmp_path / 'run'}")
    assert result.code == 0, result.err[-2000:]
    assert "Testing DataLoader 0: 100%" in result.out + result.err


def test_train_task_returns_the_optimized_metric(cache_dir, tmp_path):
    from recsys_cli.commands.train import train_task

    cfg = compose_train([*TINY_BASELINE, "model=popularity", "optimized_metric=val/hr@5",
                         f"paths.cache_dir={cache_dir}", f"paths.run_dir={tmp_path / 'run'}"])
    value = train_task(cfg)
    report = metrics_of(tmp_path / "run")
    assert value == report["val"]["hr@5"] == report["objective"]
    assert value != report["val"]["ndcg@10"]


# -- evaluate ---------------------------------------------------------------------------------------


def test_evaluate_reproduces_the_training_test_metrics(trained_run):
    run_dir, _ = trained_run
    result = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}"])
    assert result.code == 0, result.err[-3000:]
    trained = metrics_of(run_dir)["test"]
    evaluated = latest_evaluation(run_dir)["results"]["all scales"]
    assert set(evaluated) == set(trained)
    for name, value in trained.items():
        assert evaluated[name] == pytest.approx(value, abs=1e-6), name
    printed = printed_table(result.out)
    assert printed["ndcg@10"][0] == pytest.approx(trained["ndcg@10"], abs=5e-5)
    assert "Overrides of the run's config: none" in result.out
    assert "The prepared data differs" not in result.err


def test_evaluate_val_stage_reproduces_the_training_val_metrics(trained_run):
    run_dir, _ = trained_run
    result = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", "stage=val"])
    assert result.code == 0, result.err[-3000:]
    trained = metrics_of(run_dir)["val"]
    evaluated = latest_evaluation(run_dir)["results"]["all scales"]
    for name, value in trained.items():
        assert evaluated[name] == pytest.approx(value, abs=1e-6), name


def test_evaluate_with_another_split_says_so(trained_run):
    run_dir, _ = trained_run
    ckpt = f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}"
    result = run_recsys(["evaluate", ckpt, "data/split=temporal", "trainer=cpu"])
    assert result.code == 0, result.err[-3000:]
    assert "Overrides of the run's config: data/split=temporal trainer=cpu" in result.out
    assert re.search(r"^Split: temporal", result.out, re.M), result.out[-2000:]
    report = latest_evaluation(run_dir)
    assert report["overrides"] == ["data/split=temporal", "trainer=cpu"]
    assert report["results"]["all scales"] != metrics_of(run_dir)["test"]  # another split, other cases


def test_evaluation_report_names_sort_in_time_order_across_a_second_boundary():
    from recsys_cli.evaluate import report_stamp

    second = 1_700_000_000 * 1_000_000_000
    times = [second - 1, second, second + 1, second + 999_999_999, second + 1_000_000_000]
    stamps = [report_stamp(ns) for ns in times]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stamps[0].endswith(".999999999") and stamps[1].endswith(".000000000")


def test_evaluate_warns_when_the_prepared_data_differs(trained_run):
    run_dir, _ = trained_run
    result = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}",
                         "data.preparation.min_user_events=3"])
    assert result.code == 0, result.err[-3000:]
    assert "The prepared data differs from the data the run was trained on" in result.err
    report = latest_evaluation(run_dir)
    assert report["data_fingerprint_now"] != report["data_fingerprint_trained"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for machines without a GPU")
def test_evaluate_a_gpu_run_on_a_machine_without_gpu(trained_run):
    run_dir, _ = trained_run
    result = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", "trainer=gpu"])
    assert result.code == 0, result.err[-3000:]
    assert "this machine has no GPU, evaluating on the CPU" in result.out
    evaluated = latest_evaluation(run_dir)["results"]["all scales"]
    assert evaluated["ndcg@10"] == pytest.approx(metrics_of(run_dir)["test"]["ndcg@10"], abs=1e-6)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_single_process_evaluation(cache_dir, tmp_path):
    """Lightning starts the second rank by re-running the command line, so this runs the real
    ``recsys`` executable; evaluation (one process) must give the DDP run's test metrics."""
    run_dir = tmp_path / "ddp"
    args = [a for a in TINY if not a.startswith("trainer.max_epochs")]
    command = ["recsys", "train", *args, "trainer.max_epochs=1", "trainer.devices=2", "trainer.strategy=ddp",
               f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run_dir / "train_ddp_process_1.log").is_file()  # a second rank really ran
    result = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}"])
    assert result.code == 0, result.err[-3000:]
    evaluated = latest_evaluation(run_dir)["results"]["all scales"]
    for name, value in metrics_of(run_dir)["test"].items():
        assert evaluated[name] == pytest.approx(value, abs=1e-6), name


# -- resume -----------------------------------------------------------------------------------------


def test_resume_from_last_checkpoint_continues_the_run(trained_run, recsys, tmp_path):
    run_dir, _ = trained_run
    last = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["callbacks"]
    best_so_far = next(v["best_model_score"] for k, v in state.items() if k.startswith("RunCheckpoint") and v["monitor"])
    new_dir = tmp_path / "resumed"
    args = [a for a in TINY if not a.startswith("trainer.max_epochs")]
    result = recsys("train", *args, "trainer.max_epochs=3", f"ckpt_path={last}", f"hydra.run.dir={new_dir}")
    assert result.code == 0, result.err[-3000:]
    report = metrics_of(new_dir)
    assert report["epochs"] == 3 and report["resumed_from"] == str(last)
    with open(new_dir / "logs" / "metrics.csv") as f:
        epochs = {row["epoch"] for row in csv.DictReader(f) if row.get("train/loss_epoch")}
    assert epochs == {"2"}  # only the third epoch was trained again
    with open(new_dir / "logs" / "metrics.csv") as f:
        clock = [float(row["time/train_s"]) for row in csv.DictReader(f) if row.get("time/train_s")]
    assert len(clock) == 1 and clock[0] > state["TrainClock"]["seconds"]  # the sum goes on
    # the best epoch of the whole run is tested, including those before the interruption
    assert report["val"]["ndcg@10"] >= float(best_so_far) - 1e-6
    assert (new_dir / "checkpoints" / "best.ckpt").is_file()
    # the fusion weights of every epoch, before and after the interruption
    weights = json.loads((new_dir / "scale_weights.json").read_text())
    assert [w["epoch"] for w in weights] == [0, 1, 2]


def test_resume_with_another_model_is_refused(trained_run, recsys):
    run_dir, _ = trained_run
    args = [a for a in TINY if not a.startswith("model.dim")]
    result = recsys("train", *args, "model.dim=32", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")
    assert_one_error_line(result, "model.dim=16", "32", "config.yaml")


# -- multirun ---------------------------------------------------------------------------------------


def read_summary(sweep_dir: Path) -> list[dict]:
    assert (sweep_dir / "summary.md").is_file()
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def test_multirun_writes_one_summary(recsys, tmp_path):
    sweep = tmp_path / "sweep"
    args = [a for a in TINY if not a.startswith("trainer.max_epochs")]
    result = recsys("train", "-m", *args, "trainer.max_epochs=1", "scales=none", "model/encoder=gru,lstm",
                    f"hydra.sweep.dir={sweep}")
    assert result.code == 0, result.err[-3000:]
    rows = read_summary(sweep)
    assert [r["model/encoder"] for r in rows] == ["gru", "lstm"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for job, row in enumerate(rows):
        report = metrics_of(sweep / str(job))
        assert float(row["val/ndcg@10"]) == pytest.approx(report["val"]["ndcg@10"])
        assert float(row["test/hr@10"]) == pytest.approx(report["test"]["hr@10"])
    markdown = (sweep / "summary.md").read_text().splitlines()
    assert markdown[0].startswith("| job | model/encoder | status | val/ndcg@10 |")
    assert len(markdown) == 4
    assert list(sweep.glob("*/summary.csv")) == []  # one table, in the sweep directory only


def test_a_sweep_runs_through_the_submitit_launcher(recsys, tmp_path):
    """The launcher a SLURM cluster uses (hydra/launcher=submitit_slurm) has a local twin that
    submits each job as its own process: the same jobs, folders and summary."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra")
    sweep = tmp_path / "sweep"
    args = [a for a in TINY if not a.startswith("trainer.max_epochs")]
    result = recsys("train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *args,
                    "trainer.max_epochs=1", "scales=none", "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert result.code == 0, result.err[-3000:]
    rows = read_summary(sweep)
    assert [(r["seed"], r["status"]) for r in rows] == [("1", "ok"), ("2", "ok")]
    for job, row in enumerate(rows):
        assert float(row["test/ndcg@10"]) == pytest.approx(metrics_of(sweep / str(job))["test"]["ndcg@10"])
    assert (sweep / ".submitit").is_dir()  # the jobs went through submitit


def test_multirun_records_a_failing_job_and_runs_the_others(recsys, tmp_path):
    sweep = tmp_path / "sweep"
    result = recsys("train", "-m", *TINY_BASELINE, "model=popularity", "optimized_metric=val/ndcg@5",
                    "metrics.ks=[5,500],[5]", f"hydra.sweep.dir={sweep}")
    assert_one_error_line(result, "1 of 2 jobs of the sweep failed")  # exit status 2, summary written
    rows = read_summary(sweep)
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert "larger than the catalogue" in rows[0]["error"] and "ConfigError" in rows[0]["error"]
    assert float(rows[1]["val/ndcg@5"]) == metrics_of(sweep / "1")["val"]["ndcg@5"]
    assert "failed" in (sweep / "summary.md").read_text()


def test_multirun_checks_every_swept_value_before_starting(recsys, tmp_path):
    sweep = tmp_path / "sweep"
    result = recsys("train", "-m", *TINY, "model/encoder=gru,lstmm", f"hydra.sweep.dir={sweep}")
    assert_one_error_line(result, "lstmm", "gru, lstm, transformer")
    assert not sweep.exists()


# -- experiments and baselines -----------------------------------------------------------------------


def test_experiment_synthetic_gru(recsys, tmp_path):
    run_dir = tmp_path / "run"
    args = [a for a in TINY if not a.startswith("trainer.max_epochs")]
    result = recsys("train", "+experiment=synthetic_gru", *args, "trainer.max_epochs=1", "scales=none",
                    f"hydra.run.dir={run_dir}")
    assert result.code == 0, result.err[-3000:]
    config = compose_train(["+experiment=synthetic_gru"])
    assert config.model.encoder.cell == "gru" and config.trainer.max_epochs == 20
    stored = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["recsys"]["config"]
    assert stored["model"]["encoder"]["cell"] == "gru"
    assert stored["trainer"]["max_epochs"] == 1  # the command line wins over the experiment file
    assert metrics_of(run_dir)["status"] == "ok"


@pytest.mark.parametrize("model", ["popularity", "markov"])
def test_count_baselines_train_without_gradients_and_evaluate(model, recsys, tmp_path):
    run_dir = tmp_path / "run"
    result = recsys("train", *TINY_BASELINE, f"model={model}", f"hydra.run.dir={run_dir}")
    assert result.code == 0, result.err[-3000:]
    report = metrics_of(run_dir)
    assert report["epochs"] == 0 and report["test"]["hr@10"] > 0
    evaluated = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}"])
    assert evaluated.code == 0, evaluated.err[-3000:]
    again = latest_evaluation(run_dir)["results"]["all scales"]
    for name, value in report["test"].items():
        assert again[name] == pytest.approx(value, abs=1e-6), name


def test_loggers_csv_tensorboard_and_offline_wandb(recsys, tmp_path):
    run_dir = tmp_path / "run"
    result = recsys("train", *TINY_BASELINE, "model=popularity", "logger=[csv,tensorboard,wandb]",
                    f"hydra.run.dir={run_dir}")
    assert result.code == 0, result.err[-3000:]
    assert (run_dir / "logs" / "metrics.csv").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run_dir / "wandb").glob("offline-run-*"))


# -- help -------------------------------------------------------------------------------------------


def test_help():
    result = run_recsys(["--help"])
    assert result.code == 0 and "commands:" in result.out and "recsys evaluate ckpt=" in result.out
    result = run_recsys(["train", "--help"])
    assert result.code == 0
    assert "experiment: " in result.out and "synthetic_gru" in result.out
    assert re.search(r"^model/encoder: bert, gru, lstm, transformer$", result.out, re.M)
    result = run_recsys(["evaluate", "--help"])
    assert result.code == 0 and "ckpt=PATH" in result.out


# -- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["model/encoder=gruu"], ["model/encoder", "gruu", "gru, lstm, transformer"]),
        (["+experiment=nope"], ["experiment", "synthetic_gru", "synthetic_markov"]),
        (["trainer.max_epoch=3"], ["trainer.max_epoch", "did you mean trainer.max_epochs"]),
        (["data.max_len=1"], ["data.max_len=1", ">= 2"]),
        (["trainer.max_epochs=abc"], ["trainer.max_epochs", "integer"]),
        (["metrics.ks=[0]"], ["metrics.ks", ">= 1"]),
        (["metrics.filter_seen=maybe"], ["metrics.filter_seen='maybe'", "true, false or auto"]),
        (["optimized_metric=val/ndcg@50"], ["optimized_metric", "metrics.ks"]),
        (["model/encoder=gru,lstm"], ["-m"]),
        (["model.encoder=gru"], ["model/encoder=gru"]),
        (["model=popularity", "model/encoder=gru"], ["model/encoder", "remove the override"]),
        (["~logger"], ["logger", "csv, none, tensorboard, wandb"]),
        (["ckpt_path=/no/such/last.ckpt"], ["ckpt_path=/no/such/last.ckpt", "no such checkpoint file"]),
        (["--no-such-flag"], ["--no-such-flag"]),
    ],
)
def test_bad_train_input_is_one_error_line_before_any_run(overrides, fragments, recsys, tmp_path):
    result = recsys("train", *TINY, *overrides)
    assert_one_error_line(result, *fragments)
    assert not (tmp_path / "runs").exists()  # caught before Hydra made a run directory


def test_missing_required_value(recsys, tmp_path):
    assert_one_error_line(recsys("train", "data=recbole"), "data.path", "required")
    assert not (tmp_path / "runs").exists()


def test_k_larger_than_the_catalogue(recsys):
    result = recsys("train", *TINY, "metrics.ks=[10,1000]")
    assert_one_error_line(result, "metrics.ks", "K=1000", "80 items")


@pytest.fixture
def bad_checkpoints(tmp_path) -> dict[str, Path]:
    text = tmp_path / "notes.ckpt"
    text.write_text("this is not a checkpoint\n")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, foreign)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    binary = tmp_path / "image.ckpt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(56))
    truncated = tmp_path / "truncated.ckpt"  # a zip archive cut short: torch.load's own message
    truncated.write_bytes(foreign.read_bytes()[:200])
    return {"missing": tmp_path / "nope.ckpt", "text": text, "foreign": foreign, "empty": empty, "folder": tmp_path,
            "binary": binary, "truncated": truncated}  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("missing", "no such checkpoint file"),
        ("folder", "no such checkpoint file"),
        ("text", "not a checkpoint (a text file, starting 'this is not a checkpoint')"),
        ("empty", "not a checkpoint (the file is empty)"),
        ("binary", "not a checkpoint (its first bytes"),
        ("truncated", "not a readable PyTorch checkpoint"),
        ("foreign", "not a recsys checkpoint"),
    ],
)
def test_bad_checkpoint_for_evaluate_and_resume(kind, fragment, bad_checkpoints, recsys):
    path = bad_checkpoints[kind]
    assert_one_error_line(run_recsys(["evaluate", f"ckpt={path}"]), f"ckpt={path}", fragment)
    assert_one_error_line(recsys("train", *TINY, f"ckpt_path={path}"), f"ckpt_path={path}")


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["evaluate"], ["ckpt=PATH"]),
        (["evaluate", "ckpt=CKPT", "stage=train"], ["stage", "val", "test"]),
        (["evaluate", "ckpt=CKPT", "data.no_such_key=1"], ["data.no_such_key"]),
        (["evaluate", "ckpt=CKPT", "data/split=random"], ["data/split", "leave_one_out, temporal"]),
        (["evaluate", "ckpt=CKPT", "model.dim=8"], ["weights do not fit", "model.*"]),
        (["fit"], ["fit", "train, evaluate, prepare"]),
        (["prepare", "data=recbole"], ["data.path", "required"]),
        (["prepare", "data=synthetic", "data.reader.num_user=5"], ["did you mean data.reader.num_users"]),
    ],
)
def test_bad_evaluate_input(argv, fragments, trained_run):
    run_dir, _ = trained_run
    ckpt = str(run_dir / "checkpoints" / "best.ckpt")
    result = run_recsys([a.replace("CKPT", ckpt) for a in argv])
    assert_one_error_line(result, *fragments)


def test_sweep_summary_rows_of_failed_and_dead_jobs(tmp_path):
    """A job that reported a failure and one that died without a report are both 'failed'."""
    from recsys_cli.training.callbacks import sweep_rows

    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "metrics.json").write_text(json.dumps({"status": "failed", "error": "X"}))
    (tmp_path / "1").mkdir()
    rows = sweep_rows(tmp_path)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert "died before reporting" in rows[1]["error"]
    assert all(not any(k.startswith("val/") for k in r) for r in rows)
