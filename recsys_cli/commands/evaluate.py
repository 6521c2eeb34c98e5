"""``recsys evaluate ckpt=PATH``: the metrics of a checkpoint on its run's split (or another)."""

from __future__ import annotations

from recsys_cli.commands import Command, command_arguments
from recsys_cli.errors import ConfigError

HELP = """usage: recsys evaluate ckpt=PATH [stage=val|test] [ablate_scales=true] [output_dir=PATH] [overrides of the run's config]

Rebuilds the run's config, vocabulary and split from the checkpoint alone and prints its metrics;
the report goes to <run>/evaluations/ (or output_dir=PATH; hydra.run.dir=PATH means the same).
Other key=value / group=option arguments change the run's config (printed with the results), e.g.
  recsys evaluate ckpt=runs/<date>/<time>/checkpoints/best.ckpt data/split=temporal
  recsys evaluate ckpt=... data.path=/data/ml-1m-new"""

# what train's users write for "the folder this command writes to": read as output_dir
OUTPUT_ALIASES = {"hydra.run.dir": "output_dir"}


def run(argv: list[str]) -> None:
    """Evaluate ``ckpt`` with the rest of ``argv`` as overrides of the run's config."""
    from recsys_cli.evaluate import evaluate

    cfg, rest = command_arguments("evaluate", argv, OUTPUT_ALIASES)
    if cfg.stage not in ("val", "test"):
        raise ConfigError(f"stage={cfg.stage!r}: use stage=val or stage=test")
    output_dir = None if cfg.output_dir is None else str(cfg.output_dir)
    evaluate(str(cfg.ckpt), rest, stage=cfg.stage, ablate_scales=cfg.ablate_scales, output_dir=output_dir)


COMMAND = Command(
    name="evaluate",
    summary="evaluate a checkpoint:   recsys evaluate ckpt=RUN/checkpoints/best.ckpt [stage=val] [ablate_scales=true]",
    help=HELP,
    run=run,
    order=1,
)
