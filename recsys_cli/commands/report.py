"""``recsys report PATH... [output=DIR]``: the pictures of runs and sweeps, in one folder and page."""

from __future__ import annotations

from recsys_cli.commands import Command, command_arguments
from recsys_cli.errors import ConfigError

HELP = """usage: recsys report RUN_OR_SWEEP [RUN_OR_SWEEP ...] [output=DIR]

Redraws the pictures of every run (learning curves, scale weights, metrics by K and by bucket) and
sweep (NDCG@10 per configuration, mean and spread over seeds) into DIR, with DIR/summary.csv and
DIR/report.html: the summary table and every picture on one self-contained page."""


def run(argv: list[str]) -> None:
    from recsys_cli.analysis.report import build_report

    cfg, rest = command_arguments("report", argv)
    unknown = [item for item in rest if "=" in item]
    if unknown:
        raise ConfigError(f"recsys report: unknown key {unknown[0].split('=')[0]!r}; its keys are {', '.join(cfg)} (see recsys report --help)")
    page = build_report(rest, cfg.output)
    print(f"Report: {page}")


COMMAND = Command(
    name="report",
    summary="draw runs and sweeps:    recsys report RUN_OR_SWEEP [...] [output=DIR]",
    help=HELP,
    run=run,
    order=11,
)
