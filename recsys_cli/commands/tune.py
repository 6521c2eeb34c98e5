"""``recsys tune +experiment=NAME``: an Optuna search declared in the experiment's tune block."""

from __future__ import annotations

from recsys_cli.commands import Command, command_arguments

HELP = """usage: recsys tune +experiment=NAME [dir=STUDY_FOLDER] [overrides ...]

Searches the space of the experiment's tune block with Optuna (TPE with a fixed seed, trials
pruned by their validation metric per epoch, a trial budget), one normal run folder per trial,
the study in STUDY_FOLDER/study.db: run the command again with dir=STUDY_FOLDER to resume an
interrupted search. The summary lists every trial and the best. Needs Optuna:
pip install 'recsys-cli[tune]'. Example: recsys tune +experiment=synthetic_tune"""


def run(argv: list[str]) -> None:
    import logging

    from recsys_cli.tune import run_tune

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    own, rest = command_arguments("tune", argv)
    run_tune(own, rest)


COMMAND = Command(
    name="tune",
    summary="search hyperparameters:  recsys tune +experiment=NAME [dir=STUDY_FOLDER]",
    help=HELP,
    run=run,
    order=12,
)
