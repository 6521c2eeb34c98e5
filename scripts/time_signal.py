"""How much a log's timestamps can tell a next-item model: the gaps before its test targets, the
history inside each time window, timestamp ties, and (given runs) each model's test NDCG@10 by
the gap before the target.

    python scripts/time_signal.py +experiment=ml1m_sasrec data.path=../shared/data/ml-1m-users1-1500 \\
        --runs plain=RUN1,RUN2,RUN3 --runs hstu=RUN4,RUN5,RUN6 --out time_signal.json

The overrides are ``recsys train``'s: the log is read and prepared as a run reads it, and the
test case of a user is its last event (leave-one-out, the runs' protocol), predicted from the
events before it. Printed, and written to ``--out`` (JSON, atomically):

- the test targets by the gap since the user's previous event: the same second, within 30 minutes
  (one session of the product's ``session`` scale), a day, 30 days, longer; and the median gap;
- ties: the share of a user's consecutive events with the same timestamp (their order in the log
  is the file's, not the user's: no model can read an order from them);
- the history a time window holds: per test case, the mean number of the newest ``data.max_len``
  history events inside 30 minutes, a day and 30 days before the target, and the share of cases
  whose whole newest-``max_len`` history lies inside 30 days (a 30-day window then sees what the
  encoder sees);
- with ``--runs LABEL=DIR[,DIR...]`` (run folders with per-case test results, ``test_cases.parquet``
  or ``evaluations/*-test_cases.parquet``): each label's test NDCG@10 in each gap bucket, averaged
  over its runs, with the bucket's number of cases.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from recsys_cli.analysis.cases import case_metric, find_cases, read_cases  # noqa: E402

# gap buckets (upper bounds in seconds, inclusive) and the windows whose history is counted
BUCKETS = (("same second", 0), ("<= 30 min", 30 * 60), ("<= 1 day", 86_400), ("<= 30 days", 30 * 86_400))
WINDOWS = (("30 min", 30 * 60), ("1 day", 86_400), ("30 days", 30 * 86_400))


def gap_bucket(gap: np.ndarray) -> np.ndarray:
    """Each gap's bucket name (``> 30 days`` beyond the last bound)."""
    out = np.full(len(gap), "> 30 days", dtype=object)
    for name, bound in reversed(BUCKETS):
        out[gap <= bound] = name
    return out


def time_signal(offsets: np.ndarray, times: np.ndarray, max_len: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """The statistics above for the CSR log (``offsets`` [U+1], ``times`` [E], unix seconds) and
    each test case's user index and gap; users with fewer than 2 events have no test case."""
    starts, ends = offsets[:-1], offsets[1:]
    users = np.flatnonzero(ends - starts >= 2)
    target = ends[users] - 1
    gap = times[target] - times[target - 1]
    buckets = gap_bucket(gap)
    n = len(users)
    same_user = np.ones(len(times), dtype=bool)
    same_user[starts] = False  # an event and its predecessor belong to one user
    pairs = same_user[1:]
    ties = np.diff(times)[pairs[: len(times) - 1]] == 0 if len(times) > 1 else np.zeros(0, bool)
    inside = {name: np.zeros(n) for name, _ in WINDOWS}
    history_len = np.minimum(target - starts[users], max_len)
    span = np.zeros(n)
    for i, (u, t) in enumerate(zip(users, target, strict=True)):
        lo = max(starts[u], t - max_len)
        before = times[t] - times[lo:t]
        for name, width in WINDOWS:
            inside[name][i] = np.count_nonzero(before <= width)
        span[i] = before.max() if len(before) else 0
    stats = {
        "test_cases": n,
        "gap_share": {name: float(np.mean(buckets == name)) if n else 0.0 for name in (*(b for b, _ in BUCKETS), "> 30 days")},
        "gap_median_s": float(np.median(gap)) if n else 0.0,
        "tied_consecutive_events": float(ties.mean()) if len(ties) else 0.0,
        "history_events": float(history_len.mean()) if n else 0.0,
        "history_in_window": {name: float(v.mean()) if n else 0.0 for name, v in inside.items()},
        "history_within_30_days": float(np.mean(span <= 30 * 86_400)) if n else 0.0,
    }
    return stats, users, gap


def ndcg_by_gap(runs: list[Path], users: np.ndarray, gap: np.ndarray, targets: np.ndarray) -> dict:
    """NDCG@10 per gap bucket for each run folder's test cases, averaged over the runs; a case's
    target must be its user's last item (``targets``: the item of each user's last event)."""
    bucket_of_user = dict(zip(users.tolist(), gap_bucket(gap).tolist(), strict=True))
    per_run, overall = [], []
    for run in runs:
        path = find_cases(run)
        if path is None:
            raise SystemExit(f"{run}: no per-case test results (test_cases.parquet); run recsys evaluate ckpt=...")
        frame, _ = read_cases(path)
        idx = frame["user"].to_numpy()
        wrong = np.flatnonzero(targets[idx] != frame["item"].to_numpy())
        if len(wrong):
            raise SystemExit(f"{path}: row {wrong[0]}: its target is not the user's last event in this log; "
                             "give the overrides the run was trained with")  # fmt: skip
        names = np.array([bucket_of_user.get(u, "none") for u in idx.tolist()], dtype=object)
        ndcg = case_metric(frame["rank"].to_numpy(), "ndcg", 10)
        per_run.append({b: (float(ndcg[names == b].mean()), int((names == b).sum())) for b in set(names)})
        overall.append(float(ndcg.mean()))
    out = {}
    for b in (*(name for name, _ in BUCKETS), "> 30 days"):
        vals = [r[b] for r in per_run if b in r]
        if vals:
            out[b] = {"ndcg@10": float(np.mean([v for v, _ in vals])), "cases": vals[0][1]}
    out["all"] = {"ndcg@10": float(np.mean(overall))}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="recsys train overrides naming the log")
    p.add_argument("--runs", action="append", default=[], help="LABEL=DIR[,DIR...] run folders with per-case results")
    p.add_argument("--out", default=None, help="JSON path")
    args = p.parse_args(argv)

    from omegaconf import OmegaConf

    from recsys_cli.builders import build_datamodule
    from recsys_cli.compose import compose_train
    from recsys_cli.io import write_json_atomic

    overrides = list(args.overrides)
    if not any(o.startswith("paths.run_dir=") for o in overrides):  # no run folder is written
        overrides.append(f"paths.run_dir={tempfile.gettempdir()}/recsys_time_signal")
    cfg = compose_train(overrides)
    OmegaConf.resolve(cfg)
    data = build_datamodule(cfg).load()
    if not data.has_time:
        raise SystemExit(f"{cfg.data.path}: the log has no timestamps; there is no time signal to measure")
    stats, users, gap = time_signal(data.offsets, data.times, int(cfg.data.max_len))
    result = {"data": str(cfg.data.path), "max_len": int(cfg.data.max_len), **stats, "ndcg_by_gap": {}}
    for spec in args.runs:
        label, _, dirs = spec.partition("=")
        if not dirs:
            raise SystemExit(f"--runs {spec}: give LABEL=DIR[,DIR...]")
        result["ndcg_by_gap"][label] = ndcg_by_gap(
            [Path(d) for d in dirs.split(",")], users, gap, data.items[data.offsets[1:] - 1]
        )

    print(f"# {result['data']}: {stats['test_cases']} test cases, max_len {result['max_len']}")
    print("gap before the test target: " + ", ".join(f"{k} {v:.1%}" for k, v in stats["gap_share"].items())
          + f"; median {stats['gap_median_s']:.0f} s")  # fmt: skip
    print(f"consecutive events of a user with the same timestamp: {stats['tied_consecutive_events']:.1%}")
    print(f"history events read (newest {result['max_len']}): {stats['history_events']:.1f}; inside "
          + ", ".join(f"{k}: {v:.1f}" for k, v in stats["history_in_window"].items())
          + f"; cases whose read history lies within 30 days: {stats['history_within_30_days']:.1%}")  # fmt: skip
    if result["ndcg_by_gap"]:
        cols = [*(name for name, _ in BUCKETS), "> 30 days"]
        first = next(iter(result["ndcg_by_gap"].values()))
        print("\n| model | " + " | ".join(f"{c} ({first.get(c, {}).get('cases', 0)})" for c in cols) + " | all |")
        print("|---" * (len(cols) + 2) + "|")
        for label, row in result["ndcg_by_gap"].items():
            cells = [f"{row[c]['ndcg@10']:.4f}" if c in row else "-" for c in cols]
            print(f"| {label} | " + " | ".join(cells) + f" | {row['all']['ndcg@10']:.4f} |")
    if args.out:
        write_json_atomic(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
