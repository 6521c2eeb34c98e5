"""``recsys tune``: a search over the train config with Optuna, one normal run per trial (the
search space and the pruning callback: :mod:`recsys_cli.tuning`).

The experiment file declares the search in a ``tune`` block (see ``conf/experiment/ml100k_tune.yaml``):
the space (:mod:`recsys_cli.tuning.space`), the trial budget (``trials``), the sampler's seed
(TPE, ``seed``, ``startup_trials``) and the pruning (``pruning``: a median pruner fed with the
validation metric of every epoch, :mod:`recsys_cli.tuning.pruning`). The metric is the run's
``optimized_metric`` (maximised; minimised for a loss).

The study lives in SQLite in the study folder (``study.db``), so a search that was interrupted
resumes when the command is run again with ``dir=`` that folder: the trials it finished are kept
(a trial cut off mid-run is marked failed and not counted) and the search goes on until ``trials``
trials are finished. TPE's random state is not stored: a resumed search draws other points than
an uninterrupted one would have, from the same history. Each trial is a normal run folder
(``<dir>/<trial number>``: config, checkpoints, metrics.json, pictures, per-case results); the
summary (``summary.csv``, ``summary.md``, ``best.json``) lists every trial (its parameters, value,
state, test metrics) and the best one. Trials run one after the other in this process, on the
trainer's device (one process: no DDP).

Optuna is an optional dependency (``pip install 'recsys-cli[tune]'``); without it the command is
one error line saying so.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recsys_cli.analysis.sweeps import write_rows_csv
from recsys_cli.errors import ConfigError, RecsysError
from recsys_cli.io import write_json_atomic, write_text_atomic
from recsys_cli.tuning.space import as_overrides, check_space, suggest

log = logging.getLogger(__name__)

STUDY_FILE = "study.db"
STUDY_NAME = "recsys"
PRUNING_CALLBACK = "recsys_cli.tuning.pruning.TrialPruning"
SHOWN_METRICS = ("test/ndcg@10", "test/hr@10")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise RecsysError("recsys tune needs Optuna: pip install 'recsys-cli[tune]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def tune_settings(cfg: DictConfig) -> dict[str, Any]:
    """The ``tune`` block of a composed train config, checked (one error line per mistake)."""
    block = OmegaConf.select(cfg, "tune")
    if block is None:
        raise ConfigError("recsys tune needs a search declared in a tune block, e.g. +experiment=ml100k_tune (see docs/after-training.md)")
    settings = OmegaConf.to_container(block, resolve=True)
    for key in ("trials", "seed", "startup_trials", "space", "pruning"):
        if key not in settings:
            raise ConfigError(f"tune.{key} is missing; see conf/experiment/ml100k_tune.yaml for every key of the tune block")
    if not isinstance(settings["trials"], int) or settings["trials"] < 1:
        raise ConfigError(f"tune.trials={settings['trials']!r}: use a positive integer")
    pruning = settings["pruning"] or {}
    if set(pruning) != {"enabled", "startup_trials", "warmup_epochs"}:
        raise ConfigError("tune.pruning: give enabled, startup_trials and warmup_epochs")
    settings["space"] = check_space(settings["space"])
    return settings


def _study(optuna, folder: Path, settings: dict[str, Any], metric: str):
    pruning = settings["pruning"]
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=int(pruning["startup_trials"]), n_warmup_steps=int(pruning["warmup_epochs"]))
        if pruning["enabled"] else optuna.pruners.NopPruner()
    )  # fmt: skip
    sampler = optuna.samplers.TPESampler(seed=int(settings["seed"]), n_startup_trials=int(settings["startup_trials"]))
    minimise = metric.startswith("train/") or "loss" in metric
    folder.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        storage=f"sqlite:///{folder / STUDY_FILE}", study_name=STUDY_NAME, sampler=sampler, pruner=pruner,
        direction="minimize" if minimise else "maximize", load_if_exists=True,
    )  # fmt: skip


def _interrupted(trial) -> bool:
    """A trial cut off by an interruption (failed without an error of its own)."""
    return trial.state.name == "FAIL" and "error" not in trial.user_attrs


def _counted(trial) -> bool:
    """A finished trial that counts towards the budget (not one cut off by an interruption)."""
    return trial.state.is_finished() and not _interrupted(trial)


def run_tune(own: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """Run (or resume) the search of the train config composed from ``overrides``; ``own``:
    the verb's keys (``dir``, the study folder). Returns the summary (``best.json``)."""
    from recsys_cli.compose import check_resolvable, compose_train
    from recsys_cli.run_folders import unique_dir

    optuna = _optuna()
    base = compose_train(overrides)
    check_resolvable(base)
    settings = tune_settings(base)
    metric = str(base.optimized_metric)
    if own.dir:
        folder = Path(str(own.dir))
    else:
        folder = Path(unique_dir(f"{base.paths.runs_dir}/tune/{time.strftime('%Y-%m-%d/%H-%M-%S')}"))
    study = _study(optuna, folder, settings, metric)
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
        log.warning("Trial %d was cut off by an interruption: marked failed, not counted", stale.number)
    done = sum(_counted(t) for t in study.get_trials(deepcopy=False))
    print(f"Study: {folder / STUDY_FILE} ({done} of {settings['trials']} trials done; {metric}, pruning {'on' if settings['pruning']['enabled'] else 'off'})")
    while done < settings["trials"]:
        _run_trial(optuna, study, folder, settings["space"], overrides, metric)
        done += 1
        write_tune_summary(folder, study, metric)
    return write_tune_summary(folder, study, metric, show=True)


def _run_trial(optuna, study, folder: Path, space: dict, overrides: list[str], metric: str) -> None:
    from recsys_cli.compose import compose_train
    from recsys_cli.train import train
    from recsys_cli.tuning.pruning import active_trial

    trial = study.ask()
    params = suggest(trial, space)
    run_dir = folder / str(trial.number)
    trial_overrides = [
        *overrides, *as_overrides(params), f"paths.run_dir={run_dir}",
        f"+callbacks.tune_pruning._target_={PRUNING_CALLBACK}", f"+callbacks.tune_pruning.monitor={metric}",
    ]  # fmt: skip
    trial.set_user_attr("run_dir", str(run_dir))
    print(f"\nTrial {trial.number}: {' '.join(as_overrides(params))} -> {run_dir}")
    with active_trial(trial) as state:
        try:
            report = train(compose_train(trial_overrides))
        except RecsysError as err:  # this trial's configuration fails (e.g. diverges): the search goes on
            trial.set_user_attr("error", str(err))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.error("Trial %d failed: %s", trial.number, err)
            return
    for key in SHOWN_METRICS:
        stage, _, name = key.partition("/")
        if name in report.get(stage, {}):
            trial.set_user_attr(key, float(report[stage][name]))
    if state["pruned_at"] is not None:
        trial.set_user_attr("pruned_at_epoch", int(state["pruned_at"]))
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, float(report["objective"]))


def write_tune_summary(folder: Path, study, metric: str, show: bool = False) -> dict[str, Any]:
    """``summary.csv`` / ``summary.md`` (every trial: number, state, value, parameters, test
    metrics, run folder) and ``best.json`` in the study folder; returns the best trial's summary."""
    trials = study.get_trials(deepcopy=False)
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name.lower()}
        if _interrupted(t):
            row["state"] = "interrupted"
        row[metric] = t.value if t.value is not None else (max(t.intermediate_values.values()) if t.intermediate_values else None)
        row.update({p: t.params.get(p) for p in params})
        row.update({k: t.user_attrs.get(k) for k in SHOWN_METRICS})
        row["epochs_if_pruned"] = (t.user_attrs["pruned_at_epoch"] + 1) if "pruned_at_epoch" in t.user_attrs else None
        row["run_dir"] = t.user_attrs.get("run_dir")
        rows.append(row)
    columns = list(rows[0]) if rows else ["trial"]
    write_rows_csv(folder / "summary.csv", rows)

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))

    shown = [c for c in columns if c != "run_dir"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in shown) + " |" for row in rows]
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    best = None
    if completed:
        b = study.best_trial
        best = {"trial": b.number, "value": b.value, "metric": metric, "params": b.params,
                "overrides": as_overrides(b.params), **{k: b.user_attrs.get(k) for k in SHOWN_METRICS},
                "run_dir": b.user_attrs.get("run_dir")}  # fmt: skip
        lines += ["", f"Best: trial {b.number}, {metric} = {b.value:.4f}: {' '.join(as_overrides(b.params))}"]
    table = "\n".join(lines) + "\n"
    write_text_atomic(folder / "summary.md", table)
    summary = {"study": str(folder / STUDY_FILE), "trials": rows, "best": best}
    write_json_atomic(folder / "best.json", summary)
    if show:
        print(f"\nTuning summary ({folder / 'summary.csv'}):\n{table}")
    return summary
