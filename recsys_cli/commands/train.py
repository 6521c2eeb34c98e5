"""``recsys train``: a Hydra application on ``conf/train.yaml`` (overrides, ``-m`` sweeps,
``+experiment=NAME``, ``--cfg``, ``--help``).

Before Hydra starts a run, the config of every job is composed and checked
(:mod:`recsys_cli.compose`, :func:`recsys_cli.checks.validate_config`), so a typo costs no run
directory and no data preparation. Hydra's own flags are read with an argparse parser that
declares them (:func:`hydra_arguments`; Hydra's parser is private), the sweep with Hydra's public
``OverridesParser`` (:func:`recsys_cli.compose.sweep_jobs`).
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from omegaconf import DictConfig

from recsys_cli.commands import Command
from recsys_cli.config_paths import CONF_DIR
from recsys_cli.errors import RecsysError
from recsys_cli.run_folders import forget_claimed_dirs, register_resolver

log = logging.getLogger("recsys_cli")

# Hydra's command-line flags (hydra.main's parser, Hydra 1.3): name(s) -> argparse settings
HYDRA_FLAGS: dict[tuple[str, ...], dict] = {
    ("--help", "-h"): {"action": "store_true"},
    ("--hydra-help",): {"action": "store_true"},
    ("--version",): {"action": "store_true"},
    ("--cfg", "-c"): {"choices": ["job", "hydra", "all"]},
    ("--resolve",): {"action": "store_true"},
    ("--package", "-p"): {},
    ("--run", "-r"): {"action": "store_true"},
    ("--multirun", "-m"): {"action": "store_true"},
    ("--shell-completion", "-sc"): {"action": "store_true"},
    ("--config-path", "-cp"): {},
    ("--config-name", "-cn"): {},
    ("--config-dir", "-cd"): {},
    ("--experimental-rerun",): {},
    ("--info", "-i"): {"nargs": "?", "const": "all",
                       "choices": ["all", "config", "defaults", "defaults-tree", "plugins", "searchpath"]},
}  # fmt: skip


def hydra_arguments(argv: list[str]) -> argparse.Namespace:
    """``recsys train`` arguments read as Hydra reads them (its flags, then the overrides); a
    mistake is a RecsysError."""

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise RecsysError(f"{message}; see recsys train --help")

    parser = Parser(prog="recsys train", add_help=False)
    parser.add_argument("overrides", nargs="*")
    for names, settings in HYDRA_FLAGS.items():
        parser.add_argument(*names, **settings)
    return parser.parse_args(argv)


def train_task(cfg: DictConfig) -> float:
    """Hydra's task function: train one job and return the value of ``optimized_metric``.

    In a multirun a failing job is recorded (``metrics.json`` with status ``failed`` and the error,
    picked up by the sweep summary) and returns NaN, so the other jobs go on (the command then ends
    with one ``error:`` line, see :func:`check_sweep_outcome`); in a single run a user error ends
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
                print(f"error: {err}", file=sys.stderr)
                sys.exit(2)
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


def check_train_args(argv: list[str]) -> None:
    """Compose and check the config of every job ``recsys train argv`` would run (every value of
    every swept key with ``-m``); raises a one-line RecsysError on the first problem."""
    from recsys_cli.checks import check_resume, validate_config
    from recsys_cli.compose import check_resolvable, compose_train, sweep_jobs

    args = hydra_arguments(argv)
    if args.help or args.hydra_help or args.version or args.cfg or args.info or args.shell_completion:
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


def check_sweep_outcome() -> None:
    """A multirun in which jobs failed ends with an error line (and exit status 2) after its
    summary is written; the other jobs' results stand."""
    callbacks = sys.modules.get("recsys_cli.training.callbacks")  # not imported: no sweep ran
    for jobs, failed, summary in callbacks.take_sweep_outcomes() if callbacks else []:
        if failed:
            raise RecsysError(
                f"{failed} of {jobs} jobs of the sweep failed; {summary} has each job's status and "
                "error (the other jobs' results are there too)"
            )


def hydra_app(task, config_name: str, argv: list[str], prog: str) -> None:
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


def run(argv: list[str]) -> None:
    """``recsys train argv``: check every job, run Hydra, then say whether a sweep's jobs failed."""
    check_train_args(argv)
    hydra_app(train_task, "train", argv, "recsys train")
    check_sweep_outcome()


COMMAND = Command(
    name="train",
    summary="train and test a model:  recsys train [+experiment=NAME] [key=value ...] [-m sweep]",
    help="recsys train --help lists the config groups and their options",
    run=run,
    config=False,
    order=0,
    hydra_app=True,
)
