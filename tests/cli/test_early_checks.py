"""Config values checked before anything heavy, and what killed writers leave behind.

* every range a component declares on its constructor (``typing.Annotated`` with
  :class:`~recsys_cli.contract.params.Range`; Literal choices; plain types, also of other
  libraries' classes) is checked by ``validate_config`` for every ``_target_`` node of every job:
  one ``error:`` line naming the key, exit status 2, no run directory, no data prepared; the
  optimizer's own checks run on a dummy parameter; ``trainer.max_epochs=0`` for a trained model
* a sweep in which a job failed exits with an error line (status 2), its summary written
* a killed checkpoint save or preparation leaves temporary files that the next writer removes,
  while those of a writer that is alive stay
"""

from __future__ import annotations

import csv
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import pytest
from conftest import TINY, TINY_BASELINE, assert_one_error_line, run_recsys
from fixtures_formats import TAOBAO, write_bytes

from recsys_cli.checks import validate_config
from recsys_cli.compose import compose_train
from recsys_cli.contract.params import Fraction, PositiveInt, Range, declared_hints, problem
from recsys_cli.data.formats import TaobaoReader
from recsys_cli.data.prepare import prepare
from recsys_cli.data.prepared_data import PreparationConfig
from recsys_cli.errors import ConfigError
from recsys_cli.io import atomic_write, writer_tag
from recsys_cli.models.recommender import SequenceRecommender

# -- declared constraints ------------------------------------------------------------------------


class Widget:
    """A component outside the package's configs: its declared range is checked all the same."""

    def __init__(self, size: Annotated[int, Range(min=3)] = 3, share: Fraction = 0.5):
        self.size, self.share = size, share


def test_a_components_declared_range_is_checked_without_a_list_of_keys():
    cfg = compose_train(["+widget={_target_: test_early_checks.Widget, size: 2}"])
    with pytest.raises(ConfigError, match=r"^widget.size=2: use an integer >= 3$"):
        validate_config(cfg)
    validate_config(compose_train(["+widget={_target_: test_early_checks.Widget, size: 3}"]))
    assert declared_hints(SequenceRecommender)["dim"] == (PositiveInt, inspect.Parameter.empty)
    assert declared_hints(SequenceRecommender)["dropout"] == (Fraction, 0.2)


def test_problem_reports_types_ranges_and_choices():
    assert problem(PositiveInt, 1) is None and problem(PositiveInt, 0) == "use an integer >= 1"
    assert problem(PositiveInt, 2.5) == problem(PositiveInt, True) == "use an integer >= 1"
    assert problem(Fraction, 0.0) is None and problem(Fraction, 1.0) == "use a number in [0, 1)"
    assert problem(Fraction, float("nan")) == "use a number in [0, 1)"
    assert problem(int | None, None) is None and problem(int, None, default=None) is None


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("model.dim=0", "model.dim=0: use an integer >= 1"),
        ("model.dim=-8", "model.dim=-8: use an integer >= 1"),
        ("model.dropout=1.5", "model.dropout=1.5: use a number in [0, 1)"),
        ("optimizer.lr=fast", "optimizer.lr='fast': use a number"),
        ("optimizer.lr=-1", "optimizer.lr=-1: torch.optim.AdamW refuses it (Invalid learning rate: -1)"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0: the model would not be trained"),
        ("model.encoder.num_heads=0", "model.encoder.num_heads=0: use an integer >= 1"),
        ("data.train_windows=some", "data.train_windows='some': use one of 'all', 'last'"),
        ("data.num_workers=-1", "data.num_workers=-1: use an integer >= 0"),
        ("item_text.max_length=1", "item_text.max_length=1: use an integer >= 2"),
    ],
)
def test_bad_values_are_one_line_before_anything_heavy(override, line, tmp_path):
    result = run_recsys(["train", *TINY, override, f"paths.cache_dir={tmp_path / 'cache'}",
                         f"paths.runs_dir={tmp_path / 'runs'}"])
    assert assert_one_error_line(result, line).startswith(f"error: {line}")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_prepare_checks_the_components_before_reading(tmp_path):
    result = run_recsys(["prepare", "data=synthetic", "data.batch_size=0", f"paths.cache_dir={tmp_path}/cache"])
    assert_one_error_line(result, "data.batch_size=0: use an integer >= 1")
    assert not (tmp_path / "cache").exists()


def test_objective_and_baseline_values(tmp_path):
    cfg = compose_train(["objective/next_item=sampled_softmax", "objective.next_item.num_negatives=0"])
    with pytest.raises(ConfigError, match=r"^objective.next_item.num_negatives=0: use an integer >= 1$"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match=r"^model.popularity_weight=-1.0: use a number >= 0$"):
        validate_config(compose_train(["model=markov", "model.popularity_weight=-1.0"]))
    validate_config(compose_train(["model=popularity", "trainer.max_epochs=0"]))  # nothing to train


def test_every_swept_value_is_checked_before_the_first_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_recsys(["train", "-m", *TINY, "model.dim=16,0", f"hydra.sweep.dir={sweep}"])
    assert_one_error_line(result, "model.dim=0: use an integer >= 1")
    assert not sweep.exists()


def test_a_sweep_with_a_failed_job_exits_nonzero_with_its_summary(cache_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_recsys(["train", "-m", *TINY_BASELINE, "model=popularity", "optimized_metric=val/ndcg@5",
                         "metrics.ks=[5],[5,500]", f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}"])
    assert_one_error_line(result, "1 of 2 jobs of the sweep failed", str(sweep / "summary.csv"))
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok", "failed"] and "larger than the catalogue" in rows[1]["error"]
    assert (sweep / "summary.md").is_file()


# -- leftovers of killed writers -------------------------------------------------------------------


def _writer(target: Path, started: Path) -> subprocess.Popen:
    """A process that starts an atomic write of ``target`` and hangs in the middle of it."""
    code = (
        "import sys, time, pathlib\n"
        "from recsys_cli.io import atomic_write\n"
        "def write(tmp):\n"
        "    tmp.write_bytes(b'')\n"
        "    pathlib.Path(sys.argv[2]).write_text('x')\n"
        "    time.sleep(120)\n"
        "atomic_write(sys.argv[1], write)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(target), str(started)])
    deadline = time.time() + 60
    while not started.exists():
        assert proc.poll() is None and time.time() < deadline, "the writer did not start"
        time.sleep(0.05)
    return proc


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_killed_checkpoint_save_is_cleaned_by_the_next_writer_not_while_alive(tmp_path):
    folder = tmp_path / "checkpoints"
    proc = _writer(folder / "best.ckpt", tmp_path / "started")
    try:
        [leftover] = _temporaries(folder)
        assert leftover.startswith(f".best.ckpt.{proc.pid}-")
        atomic_write(folder / "last.ckpt", lambda tmp: tmp.write_bytes(b"last"))
        assert _temporaries(folder) == [leftover]  # its writer is alive: kept
    finally:
        proc.kill()
        proc.wait()
    atomic_write(folder / "last.ckpt", lambda tmp: tmp.write_bytes(b"again"))
    assert _temporaries(folder) == [] and (folder / "last.ckpt").read_bytes() == b"again"


def test_untagged_leftovers_go_by_age_and_other_files_stay(tmp_path):
    old = write_bytes(tmp_path / ".best.ckpt.k2j4_x9a.tmp", b"")  # before writer tags
    os.utime(old, (0, 0))
    fresh = write_bytes(tmp_path / ".last.ckpt.q1w2e3r4.tmp", b"")
    notes = write_bytes(tmp_path / ".notes.tmp", b"mine")
    os.utime(notes, (0, 0))
    atomic_write(tmp_path / "metrics.json", lambda tmp: tmp.write_text("{}"))
    assert not old.exists() and fresh.exists() and notes.exists()


def test_a_killed_preparation_is_cleaned_by_the_next_one(tmp_path):
    path = write_bytes(tmp_path / "UserBehavior.csv", TAOBAO)
    cache = tmp_path / "cache"
    space = writer_tag().split("-", 1)[1]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = cache / f".taobao-0123456789abcdef.tmp-{int(dead.stdout)}-{space}-abcd1234"
    alive = cache / f".other-0123456789abcdef.tmp-{os.getpid()}-{space}-efgh5678"
    for folder in (killed, alive):
        folder.mkdir(parents=True)
        (folder / "arrays.npz").write_bytes(b"\0" * 1000)
    data = prepare(TaobaoReader(str(path)), PreparationConfig(), cache, "taobao")
    assert data.num_events == 5 and not killed.exists() and alive.exists()
