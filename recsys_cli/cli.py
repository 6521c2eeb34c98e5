"""The ``recsys`` command: ``recsys <verb> [arguments...]``, one verb per module of
:mod:`recsys_cli.commands` (train, evaluate, prepare, ...).

User errors print one line (``error: ...``) and exit with status 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

from recsys_cli.commands import command_help, commands
from recsys_cli.config_paths import CONF_DIR
from recsys_cli.errors import RecsysError

EXAMPLES = """examples:
  recsys train                                        default model, embedded synthetic data, CPU
  recsys train +experiment=synthetic_gru              an experiment of conf/experiment/
  recsys train -m model/encoder=gru,lstm,transformer  a sweep with one summary table
  recsys evaluate ckpt=runs/<date>/<time>/checkpoints/best.ckpt data/split=temporal

`recsys <command> --help` says more about a command; `recsys train --help` lists the config groups
and their options; configs live in {conf}."""


def usage() -> str:
    """``recsys --help``: every verb's line, then examples."""
    lines = [f"  {c.name:<10} {c.summary}" for c in commands().values()]
    return "usage: recsys <command> [overrides...]\n\ncommands:\n" + "\n".join(lines) + "\n\n" + EXAMPLES.format(conf=CONF_DIR)


def _fail(err: Exception) -> NoReturn:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """``recsys <command> [overrides...]`` (``argv`` defaults to ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if not CONF_DIR.is_dir():
        _fail(RecsysError(f"config folder {CONF_DIR} is missing; install with `pip install -e .` from a clone"))
    name, rest = argv[0], argv[1:]
    verbs = commands()
    try:
        if name not in verbs:
            raise RecsysError(f"unknown command {name!r}; valid commands: {', '.join(verbs)} (see recsys --help)")
        command = verbs[name]
        if not command.hydra_app and any(a in ("-h", "--help") for a in rest):
            print(command_help(command))
            return
        if not command.hydra_app:
            logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
        command.run(rest)
    except RecsysError as err:
        _fail(err)


if __name__ == "__main__":
    main()
