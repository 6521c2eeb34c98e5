"""The ``recsys`` command: ``train``, ``evaluate`` and ``prepare`` subcommands.

``recsys train`` is a Hydra application (overrides, ``-m`` sweeps, ``+experiment=NAME``).
``recsys evaluate ckpt=PATH`` and ``recsys prepare`` compose configs without creating a run.
User errors print one line (``error: ...``) and exit with status 2, never a traceback.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import traceback

from recsys_cli.config_paths import CONF_DIR
from recsys_cli.errors import RecsysError

USAGE = """usage: recsys <command> [overrides...]

commands:
  train      train and test a model:  recsys train [+experiment=NAME] [key=value ...] [-m sweep]
  evaluate   evaluate a checkpoint:   recsys evaluate ckpt=RUN/checkpoints/best.ckpt [+ablate_scales=true]
  prepare    prepare and cache data:  recsys prepare data=NAME data.path=PATH

Configs live in {conf}; `recsys train --help` lists the config groups and options."""

log = logging.getLogger("recsys_cli")


def _fail(err: Exception) -> None:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


def _train_task(cfg) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from recsys_cli.io import write_json_atomic
    from recsys_cli.train import objective, train

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return objective(train(cfg), cfg.optimized_metric)
    except Exception as err:  # noqa: BLE001 - a sweep records failures and goes on
        if not multirun:
            if isinstance(err, RecsysError):
                _fail(err)
            raise
        log.error("Job failed: %s\n%s", err, traceback.format_exc())
        write_json_atomic(
            os.path.join(HydraConfig.get().runtime.output_dir, "metrics.json"),
            {"status": "failed", "error": f"{type(err).__name__}: {err}"},
        )
        return math.nan


def _hydra_app(task, config_name: str, argv: list[str], prog: str):
    import hydra

    sys.argv = [prog, *argv]
    return hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)()


def _compose(argv: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=argv)
    except (HydraException, OmegaConfBaseException) as err:
        raise RecsysError(" ".join(str(err).split())) from None


def _prepare(argv: list[str]) -> None:
    import json

    from recsys_cli.train import build_datamodule

    cfg = _compose(argv)
    dm = build_datamodule(cfg)
    data = dm.load()
    print(json.dumps(data.stats, indent=2, default=str))


def _evaluate(argv: list[str]) -> None:
    from recsys_cli.evaluate import evaluate

    ckpt, stage, ablate, rest = None, "test", False, []
    for item in argv:
        key, _, value = item.partition("=")
        if key in ("ckpt", "+ckpt"):
            ckpt = value
        elif key in ("stage", "+stage"):
            stage = value
        elif key in ("ablate_scales", "+ablate_scales"):
            ablate = value.strip().lower() in ("true", "1", "yes")
        else:
            rest.append(item)
    if not ckpt:
        raise RecsysError("recsys evaluate needs ckpt=PATH (e.g. ckpt=runs/<date>/<time>/checkpoints/best.ckpt)")
    evaluate(ckpt, rest, stage=stage, ablate_scales=ablate)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(conf=CONF_DIR))
        return
    if not CONF_DIR.is_dir():
        _fail(RecsysError(f"config folder {CONF_DIR} is missing; install with `pip install -e .` from a clone"))
    command, rest = argv[0], argv[1:]
    try:
        if command == "train":
            _hydra_app(_train_task, "train", rest, "recsys train")
        elif command == "evaluate":
            logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
            _evaluate(rest)
        elif command == "prepare":
            logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
            _prepare(rest)
        else:
            _fail(RecsysError(f"unknown command {command!r}; valid commands: train, evaluate, prepare"))
    except RecsysError as err:
        _fail(err)


if __name__ == "__main__":
    main()
