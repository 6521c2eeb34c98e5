"""``recsys tune``: a search of tiny trials, interrupted and resumed from its SQLite study with
the finished trials kept; the search space's checks. Skipped without Optuna (an optional extra)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_DATA, assert_one_error_line, run_recsys

from recsys_cli.errors import ConfigError
from recsys_cli.tuning.space import as_overrides, check_space

optuna = pytest.importorskip("optuna")

SEARCH = ["+experiment=synthetic_tune", *TINY_DATA, "trainer.max_epochs=2", "callbacks.progress_bar.refresh_rate=0"]


def trials(folder: Path) -> list:
    study = optuna.load_study(study_name="recsys", storage=f"sqlite:///{folder / 'study.db'}")
    return study.get_trials()


def test_an_interrupted_search_resumes_with_its_finished_trials_kept(tmp_path, cache_dir):
    folder = tmp_path / "study"
    common = [*SEARCH, f"paths.cache_dir={cache_dir}", f"dir={folder}"]
    first = run_recsys(["tune", *common, "tune.trials=2"])
    assert first.code == 0, first.err[-3000:]
    before = trials(folder)
    assert [t.state.name for t in before] == ["COMPLETE", "COMPLETE"]
    # a third trial cut off mid-run (the process killed): asked, never told
    study = optuna.load_study(study_name="recsys", storage=f"sqlite:///{folder / 'study.db'}")
    study.ask()
    second = run_recsys(["tune", *common, "tune.trials=3"])
    assert second.code == 0, second.err[-3000:]
    after = trials(folder)
    assert [t.state.name for t in after] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    for old, new in zip(before, after[:2], strict=True):  # the finished trials are kept as they were
        assert (old.params, old.value) == (new.params, new.value)
    summary = json.loads((folder / "best.json").read_text())
    assert [row["state"] for row in summary["trials"]] == ["complete", "complete", "interrupted", "complete"]
    best = max((t for t in after if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert summary["best"]["trial"] == best.number and summary["best"]["value"] == best.value
    for t in (after[0], after[1], after[3]):  # each trial a normal run folder with its drawn values
        run = Path(t.user_attrs["run_dir"])
        report = json.loads((run / "metrics.json").read_text())
        assert report["val"]["ndcg@10"] == pytest.approx(t.value)
        config = (run / "config.yaml").read_text()
        assert f"dim: {t.params['model.dim']}" in config
        assert (run / "test_cases.parquet").is_file()
    assert "Best: trial" in (folder / "summary.md").read_text()


def test_a_config_without_a_tune_block_is_one_error_line(tmp_path):
    result = run_recsys(["tune", *TINY_DATA, f"dir={tmp_path / 's'}"])
    assert_one_error_line(result, "tune block", "+experiment=ml100k_tune")


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ({}, "at least one parameter"),
        ({"optimizer.lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "low > 0"),
        ({"model.dim": {"type": "categorical"}}, "choices"),
        ({"model.dropout": {"type": "float", "low": 0.5, "high": 0.1}}, "low < high"),
        ({"model.dropout": {"type": "normal"}}, "type: float, int or categorical"),
        ({"model.dropout": {"type": "float", "low": 0, "high": 1, "scale": 2}}, "unknown setting"),
    ],
)
def test_the_space_is_checked_in_one_line(space, fragment):
    with pytest.raises(ConfigError, match=fragment):
        check_space(space)


def test_drawn_values_become_overrides():
    assert as_overrides({"optimizer.lr": 0.000123456789, "scales": "none", "model.dim": 64}) == [
        "optimizer.lr=0.000123456789", "scales=none", "model.dim=64",
    ]  # fmt: skip


class FakeTrial:
    """Records reports; prunes from ``prune_from`` on."""

    def __init__(self, prune_from: int) -> None:
        self.reports, self.prune_from = [], prune_from

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return self.reports[-1][0] >= self.prune_from


def fake_trainer(epoch: int, value: float, fn: str = "fit"):
    from types import SimpleNamespace

    import torch
    from pytorch_lightning.trainer.states import TrainerFn

    state = SimpleNamespace(fn=TrainerFn.FITTING if fn == "fit" else TrainerFn.VALIDATING)
    return SimpleNamespace(sanity_checking=False, state=state, current_epoch=epoch, should_stop=False,
                           callback_metrics={"val/ndcg@10": torch.tensor(value)})  # fmt: skip


def test_pruning_reports_every_epoch_and_stops_a_pruned_trial():
    from recsys_cli.tuning.pruning import TrialPruning, active_trial

    callback, trial = TrialPruning("val/ndcg@10"), FakeTrial(prune_from=2)
    callback.on_validation_end(fake_trainer(0, 0.1), None)  # no active trial: nothing happens
    with active_trial(trial) as state:
        for epoch, value in enumerate((0.1, 0.2, 0.15)):
            trainer = fake_trainer(epoch, value)
            callback.on_validation_end(trainer, None)
            assert trainer.should_stop == (epoch == 2)
        callback.on_validation_end(fake_trainer(3, 0.2, fn="validate"), None)  # the final validation
    assert [step for step, _ in trial.reports] == [0, 1, 2]
    assert [value for _, value in trial.reports] == pytest.approx([0.1, 0.2, 0.15])
    assert state["pruned_at"] == 2
