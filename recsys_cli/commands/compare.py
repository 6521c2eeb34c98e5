"""``recsys compare RUN_A RUN_B [...]``: paired differences over test cases, with intervals."""

from __future__ import annotations

from recsys_cli.commands import Command, command_arguments
from recsys_cli.errors import ConfigError

HELP = """usage: recsys compare RUN_A RUN_B [RUN ...] [output=FILE.json] [metrics=[ndcg@10,hr@10]]

For every metric, the difference of each run from the first over the same test cases: the mean
difference, its 95% paired-bootstrap interval and a paired t-test's p-value (Holm-corrected when
more than two runs are compared). Runs evaluated on other test cases are refused. Runs of older
versions get their per-case results with recsys evaluate ckpt=RUN/checkpoints/best.ckpt."""


def run(argv: list[str]) -> None:
    from omegaconf import OmegaConf

    from recsys_cli.analysis.compare import run_compare

    cfg, rest = command_arguments("compare", argv)
    unknown = [item for item in rest if "=" in item]
    if unknown:
        raise ConfigError(f"recsys compare: unknown key {unknown[0].split('=')[0]!r}; its keys are {', '.join(cfg)} (see recsys compare --help)")
    run_compare(OmegaConf.merge(cfg, {"runs": rest}))


COMMAND = Command(
    name="compare",
    summary="compare runs:            recsys compare RUN_A RUN_B [...] [output=FILE.json]",
    help=HELP,
    run=run,
    order=10,
)
