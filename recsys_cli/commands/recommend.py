"""``recsys recommend ckpt=PATH``: the top-K of a run's users (Parquet), or of one ad-hoc history
(JSON lines)."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from recsys_cli.commands import Command, command_arguments
from recsys_cli.errors import ConfigError

HELP = """usage: recsys recommend ckpt=PATH [users=FILE|LIST] [k=20] [output=recs.parquet] [filter_seen=true|false]
       recsys recommend ckpt=PATH history='[id1, id2, ...]' [times='[t1, t2, ...]'] [event_types='[...]']

Rebuilds the run from its checkpoint and writes the top-K items of every user (or of the listed
users) from their whole known history: raw user and item ids, titles when the data has them,
scores and ranks, in the order evaluation ranks (seen items filtered as the run's evaluation did
unless filter_seen says otherwise). With history=..., prints the top-K of that one history as JSON
lines. Unknown ids are skipped, one line each on stderr."""


def output_path(cfg, run_dir: Path | None, ckpt: str) -> Path:
    """``output``, or ``<run>/recommendations/top<k>-<time>.parquet``; an existing file is refused
    unless ``overwrite=true``."""
    if cfg.output is None:
        folder = (run_dir if run_dir is not None else Path(ckpt).resolve().parent) / "recommendations"
        return folder / f"top{cfg.k}-{time.strftime('%Y-%m-%d_%H-%M-%S')}.parquet"
    path = Path(str(cfg.output))
    if path.exists() and not cfg.overwrite:
        raise ConfigError(f"output={path} exists; choose another file or replace it with overwrite=true")
    if path.is_dir():
        raise ConfigError(f"output={path} is a folder; give a file name, e.g. output={path}/recs.parquet")
    return path


def check(cfg) -> None:
    """What can be checked before the run is rebuilt."""
    if cfg.k is None or cfg.k < 1:
        raise ConfigError(f"k={cfg.k}: recommend at least one item (e.g. k=20)")
    if cfg.batch_size is None or cfg.batch_size < 1:
        raise ConfigError(f"batch_size={cfg.batch_size}: use a positive number of users (e.g. 256)")
    if not isinstance(cfg.overwrite, bool):
        raise ConfigError(f"overwrite={cfg.overwrite!r}: use true or false")
    if cfg.filter_seen is not None and not isinstance(cfg.filter_seen, bool):
        raise ConfigError(f"filter_seen={cfg.filter_seen!r}: use true, false or null (the run's own)")
    if cfg.history is None and (cfg.times is not None or cfg.event_types is not None):
        raise ConfigError("times= and event_types= go with history=[...]; give the history too")
    if cfg.history is not None and cfg.users is not None:
        raise ConfigError("give users=... (the run's users) or history=[...] (one ad-hoc history), not both")
    if cfg.history is not None and (not OmegaConf.is_list(cfg.history) or not cfg.history):
        raise ConfigError(f"history={cfg.history!r}: give raw item ids as a list, history='[id1, id2, ...]'")
    for key in ("times", "event_types"):
        if cfg[key] is not None and not OmegaConf.is_list(cfg[key]):
            raise ConfigError(f"{key}={cfg[key]!r}: give a list, one value per item of history")


def run(argv: list[str]) -> None:
    """Recommend for the run's users or for one ad-hoc history."""
    from recsys_cli.recommend import (
        pick_device,
        print_json_lines,
        recommend_history,
        recommend_users,
        user_indices,
    )
    from recsys_cli.runs import load_run

    cfg, rest = command_arguments("recommend", argv)
    check(cfg)
    device = pick_device(cfg.device)
    adhoc = cfg.history is not None
    # JSON lines own stdout: what rebuilding the run prints goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if adhoc else contextlib.nullcontext():
        loaded = load_run(str(cfg.ckpt), rest)
    if OmegaConf.select(loaded.cfg, "model.context_request_time", default=False):
        raise ConfigError(
            "model.context_request_time=true: the model reads the time of the request, which a query "
            "does not carry yet; recommend with a run trained without it"
        )
    model = loaded.module.model.to(device)
    if model.requires_training:
        model.refresh_items()  # an item table computed from weights (text items) is brought up to date
    filter_seen = loaded.module.filter_seen if cfg.filter_seen is None else cfg.filter_seen
    k = min(cfg.k, loaded.data.num_items)
    if adhoc:
        as_list = OmegaConf.to_container(cfg, resolve=True)
        rows = recommend_history(
            loaded, as_list["history"], as_list["times"], as_list["event_types"], k, filter_seen, device
        )
        print_json_lines(rows)
        return
    users, asked = user_indices(loaded, OmegaConf.to_container(cfg, resolve=True)["users"])
    if len(users) == 0:
        raise ConfigError(f"none of the {asked} user ids given is in the run's data; nothing to recommend")
    output = output_path(cfg, loaded.run_dir, str(cfg.ckpt))
    seen = "filtered" if filter_seen else "kept"
    print(f"Recommending the top {k} items for {len(users)} users (seen items {seen}) to {output}")
    started = time.perf_counter()
    rows = recommend_users(loaded, users, k, filter_seen, cfg.batch_size, output, device)
    seconds = time.perf_counter() - started
    print(f"Wrote {rows} rows for {len(users)} users in {seconds:.1f} s ({len(users) / max(seconds, 1e-9):.0f} users/s): {output}")


COMMAND = Command(
    name="recommend",
    summary="top-K for users:         recsys recommend ckpt=PATH [users=FILE|LIST] [k=20] [output=recs.parquet]",
    help=HELP,
    run=run,
    order=3,
)
