"""``recsys prepare``: read, clean, index and cache a dataset, without training."""

from __future__ import annotations

from recsys_cli.commands import Command

HELP = """usage: recsys prepare data=NAME [data.path=PATH] [model/item=text] [key=value ...]

Reads, cleans, indexes and caches a dataset (conf/data/NAME.yaml) and prints its statistics;
with model/item=text or id_text it also encodes and caches the items' text vectors. The arguments
are those of recsys train (overrides of conf/train.yaml)."""


def run(argv: list[str]) -> None:
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


COMMAND = Command(
    name="prepare",
    summary="prepare and cache data:  recsys prepare data=NAME data.path=PATH",
    help=HELP,
    run=run,
    config=False,
    order=2,
)
