"""The ``recsys`` command: ``train``, ``evaluate`` and ``prepare`` subcommands.

``recsys train`` is a Hydra application (overrides, ``-m`` sweeps, ``+experiment=NAME``). Before
Hydra starts a run, the config of every job is composed and checked (:mod:`recsys_cli.compose`,
:func:`recsys_cli.checks.validate_config`), so a typo costs no run directory and no data preparation.
``recsys evaluate ckpt=PATH`` and ``recsys prepare`` compose configs without creating a run.
User errors print one line (``error: ...``) and exit with status 2, never a traceback.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from omegaconf import DictConfig

from recsys_cli.config_paths import CONF_DIR
from recsys_cli.errors import RecsysError
from recsys_cli.run_folders import forget_claimed_dirs, register_resolver

USAGE = """usage: recsys <command> [overrides...]

commands:
  train      train and test a model:  recsys train [+experiment=NAME] [key=value ...] [-m sweep]
  evaluate   evaluate a checkpoint:   recsys evaluate ckpt=RUN/checkpoints/best.ckpt [stage=val] [ablate_scales=true]
  prepare    prepare and cache data:  recsys prepare data=NAME data.path=PATH

examples:
  recsys train                                        default model, embedded synthetic data, CPU
  recsys train +experiment=synthetic_gru              an experiment of conf/experiment/
  recsys train -m model/encoder=gru,lstm,transformer  a sweep with one summary table
  recsys evaluate ckpt=runs/<date>/<time>/checkpoints/best.ckpt data/split=temporal

`recsys train --help` lists the config groups and their options; configs live in {conf}."""

EVALUATE_USAGE = """usage: recsys evaluate ckpt=PATH [stage=val|test] [ablate_scales=true] [output_dir=PATH] [overrides of the run's config]

Rebuilds the run's config, vocabulary and split from the checkpoint alone and prints its metrics;
the report goes to <run>/evaluations/ (or output_dir=PATH; hydra.run.dir=PATH means the same).
Other key=value / group=option arguments change the run's config (printed with the results), e.g.
  recsys evaluate ckpt=runs/<date>/<time>/checkpoints/best.ckpt data/split=temporal
  recsys evaluate ckpt=... data.path=/data/ml-1m-new"""

PREPARE_USAGE = """usage: recsys prepare data=NAME [data.path=PATH] [model/item=text] [key=value ...]

Reads, cleans, indexes and caches a dataset (conf/data/NAME.yaml) and prints its statistics;
with model/item=text or id_text it also encodes and caches the items' text vectors."""

log = logging.getLogger("recsys_cli")


def _fail(err: Exception) -> NoReturn:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


def train_task(cfg: DictConfig) -> float:
    """Hydra's task function: train one job and return the value of ``optimized_metric``.

    In a multirun a failing job is recorded (``metrics.json`` with status ``failed`` and the error,
    picked up by the sweep summary) and returns NaN, so the other jobs go on (the command then ends
    with one ``error:`` line, see :func:`_check_sweep_outcome`); in a single run a user error ends
    the command with one ``error:`` line.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from recsys_cli.io import write_json_atomic
    from recsys_cli.train import train
    from recsys_cli.training.divergence import Diverged

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return train(cfg)["objective"]
    except Exception as err:  # noqa: BLE001 - a sweep records failures and goes on
        if not multirun:
            if isinstance(err, RecsysError):
                _fail(err)
            raise
        if isinstance(err, RecsysError):
            log.error("Job failed: %s", err)
        else:
            log.error("Job failed: %s\n%s", err, traceback.format_exc())
        if not isinstance(err, Diverged):  # a diverged run wrote its own report (status diverged)
            write_json_atomic(
                f"{HydraConfig.get().runtime.output_dir}/metrics.json",
                {"status": "failed", "error": f"{type(err).__name__}: {err}"},
            )
        return math.nan


def _hydra_args(argv: list[str]):
    """Hydra's own command-line parser, with its errors as RecsysErrors."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str) -> NoReturn:
        raise RecsysError(f"{message}; see recsys train --help")

    parser.error = error
    return parser.parse_args(argv)


def check_train_args(argv: list[str]) -> None:
    """Compose and check the config of every job ``recsys train argv`` would run (every value of
    every swept key with ``-m``); raises a one-line RecsysError on the first problem."""
    from recsys_cli.checks import check_resume, validate_config
    from recsys_cli.compose import check_resolvable, compose_train, sweep_jobs

    args = _hydra_args(argv)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return
    if args.config_path or args.config_name or args.config_dir or args.experimental_rerun:
        return  # another primary config: Hydra checks it
    jobs = sweep_jobs(args.overrides) if args.multirun else [args.overrides]
    for overrides in jobs:
        cfg = compose_train(overrides)
        check_resolvable(cfg)
        validate_config(cfg)
        if cfg.ckpt_path is not None:
            check_resume(cfg)
    check_output_folder(args.overrides, args.multirun, cfg)


def check_output_folder(overrides: list[str], multirun: bool, cfg: DictConfig) -> None:
    """A run folder (or sweep folder) given by hand must not hold another run, checked before
    Hydra writes its own files there (``.hydra/``, the log); the run's claim, taken when it
    starts, settles two runs started at once (:mod:`recsys_cli.run_folders`). Other ranks of a
    DDP run share the first one's folder, so they skip the check."""
    from recsys_cli.compose import parse_overrides
    from recsys_cli.run_folders import check_run_folder, launched_rank, run_contents

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [o.value() for o in parse_overrides(overrides) if o.key_or_group == key and not o.is_sweep_override()]
    if not given or launched_rank() > 0 or "${" in str(given[-1]):
        return  # a new folder of recsys's own, or one known only once Hydra resolves it
    folder = Path(str(given[-1]))
    if not multirun:
        check_run_folder(folder, bool(cfg.overwrite), cfg.ckpt_path)
        return
    taken = [job.name for job in sorted(folder.glob("[0-9]*")) if job.is_dir() and run_contents(job)]
    if taken and not cfg.overwrite:
        raise RecsysError(
            f"hydra.sweep.dir={folder} already holds a sweep (jobs {', '.join(taken[:5])}); choose another "
            "folder, leave hydra.sweep.dir to recsys (every sweep gets a new one), or replace it with overwrite=true"
        )


def _check_sweep_outcome() -> None:
    """A multirun in which jobs failed ends with an error line (and exit status 2) after its
    summary is written; the other jobs' results stand."""
    callbacks = sys.modules.get("recsys_cli.training.callbacks")  # not imported: no sweep ran
    for jobs, failed, summary in callbacks.take_sweep_outcomes() if callbacks else []:
        if failed:
            raise RecsysError(
                f"{failed} of {jobs} jobs of the sweep failed; {summary} has each job's status and "
                "error (the other jobs' results are there too)"
            )


def _hydra_app(task, config_name: str, argv: list[str], prog: str) -> None:
    """Run ``task`` as a Hydra app on ``argv``.

    Hydra reads its arguments from ``sys.argv``, so they are swapped in for the parse; the task
    itself runs with the real ``sys.argv`` back in place, because Lightning's DDP launcher starts
    the other ranks by re-running ``sys.argv`` (plus ``hydra.run.dir=...``).
    """
    import hydra

    register_resolver()  # ${unique_dir:...} in conf/hydra/default.yaml
    forget_claimed_dirs()
    real_argv = sys.argv

    @functools.wraps(task)
    def task_with_real_argv(cfg: DictConfig):
        sys.argv = real_argv
        return task(cfg)

    sys.argv = [prog, *argv]
    try:
        hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task_with_real_argv)()
    finally:
        sys.argv = real_argv


def _prepare(argv: list[str]) -> None:
    """Prepare and cache the data, then build the model once, so that whatever it prepares from the
    data is cached too (``model/item=text``: the items' text vectors)."""
    from recsys_cli.builders import build_datamodule, build_model
    from recsys_cli.checks import check_components, check_paths_and_text
    from recsys_cli.compose import check_resolvable, compose_train
    from recsys_cli.data.prepare_stats import format_stats

    cfg = compose_train(argv)
    check_resolvable(cfg)
    check_paths_and_text(cfg)
    check_components(cfg)
    dm = build_datamodule(cfg)
    data = dm.load()
    print(format_stats(data.stats))
    build_model(cfg, dm.spec())


def _evaluate(argv: list[str]) -> None:
    from recsys_cli.evaluate import evaluate, evaluate_config

    cfg, rest = evaluate_config(argv)
    evaluate(cfg.ckpt, rest, stage=cfg.stage, ablate_scales=cfg.ablate_scales, output_dir=cfg.output_dir)


def main(argv: list[str] | None = None) -> None:
    """``recsys <command> [overrides...]`` (``argv`` defaults to ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(conf=CONF_DIR))
        return
    if not CONF_DIR.is_dir():
        _fail(RecsysError(f"config folder {CONF_DIR} is missing; install with `pip install -e .` from a clone"))
    command, rest = argv[0], argv[1:]
    helps = {"evaluate": EVALUATE_USAGE, "prepare": PREPARE_USAGE}
    if command in helps and any(a in ("-h", "--help") for a in rest):
        print(helps[command])
        return
    try:
        if command == "train":
            check_train_args(rest)
            _hydra_app(train_task, "train", rest, "recsys train")
            _check_sweep_outcome()
        elif command in ("evaluate", "prepare"):
            logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
            (_evaluate if command == "evaluate" else _prepare)(rest)
        else:
            raise RecsysError(f"unknown command {command!r}; valid commands: train, evaluate, prepare (see recsys --help)")
    except RecsysError as err:
        _fail(err)


if __name__ == "__main__":
    main()
