"""Benchmark: preparing ~10M events and their per-event window features, recsys vs plain pandas.

    python scripts/bench_prepare.py --events 10000000

Phases (each measured phase runs in a fresh child process, so its peak RSS is its own):

1. generation: ``SyntheticSource`` (recsys_cli/data/synthetic.py) with enough users for
   ``--events`` events (the events per user are measured on a small probe first), rows shuffled
   (a raw log is not sorted by user) and written to ``events.parquet`` in ``--workdir``;
2. recsys: ``TabularReader`` (read + validate the Parquet file), ``prepare_events`` (dedup,
   k-core, id mapping, stable sort, CSR) and ``compute_window_features`` for 4 scales
   (session 30m/20 events, day 1d/50, month 30d/200, all/200);
3. pandas: the same steps as a careful pandas user writes them: ``drop_duplicates``, a k-core
   loop of ``groupby().transform('size')``, ``factorize(sort=True)``, a stable ``sort_values``,
   and window statistics with ``groupby().rolling`` (time windows with ``closed='both'``, count
   windows, their intersection as a custom ``BaseIndexer``, distinct values with
   ``rolling.apply``). Its prepared arrays are checked equal to recsys's. Its window statistics
   are too slow for all events (``rolling.apply`` calls Python once per window), so they run on
   a random subsample of users (``--pandas-events``, default 200k events), where recsys's
   features are timed too and the two are checked equal; the 10M pandas figure for that step
   is EXTRAPOLATED linearly from the subsample, and the table says so.

Prints a Markdown table and the command. ``--events 200000`` runs in seconds (smoke test).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCALES = [  # (name, max_events, seconds, last)
    ("session", 20, 30 * 60, None),
    ("day", 50, 86400, None),
    ("month", 200, 30 * 86400, None),
    ("all", 200, None, None),
]
PREPARATION = {
    "dedup": True,
    "min_user_events": 5,
    "min_item_events": 5,
    "max_events_per_user": None,
}
SYNTHETIC = {"num_items": 100_000, "num_categories": 50, "days": 365, "seed": 0}
COLUMNS = {
    "user": "user_id",
    "item": "item_id",
    "timestamp": "timestamp",
    "event_type": "event_type",
    "category": "category",
}


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def scales():
    from recsys_cli.contract.scales import TimeWindowScale

    return [TimeWindowScale(n, m, s, last) for n, m, s, last in SCALES]


# -- phase 1: generation -------------------------------------------------------------------------


def generate(events: int, path: Path) -> dict:
    import polars as pl

    from recsys_cli.data.synthetic import SyntheticSource

    probe_users = 2000
    probe = SyntheticSource(num_users=probe_users, **SYNTHETIC).read().events.height
    num_users = max(10, round(events * probe_users / probe))
    t0 = time.perf_counter()
    raw = SyntheticSource(num_users=num_users, **SYNTHETIC).read()
    generate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    order = np.random.default_rng(0).permutation(raw.events.height)
    raw.events[order].write_parquet(path)
    write_s = time.perf_counter() - t0
    del pl
    return {
        "num_users": num_users,
        "raw_events": raw.events.height,
        "generate_s": generate_s,
        "shuffle_write_s": write_s,
    }


# -- phase 2: recsys -----------------------------------------------------------------------------


def subsample_users(num_users: int, lengths: np.ndarray, target_events: int) -> np.ndarray:
    """Sorted random users whose events add up to about ``target_events``."""
    order = np.random.default_rng(1).permutation(num_users)
    take = np.searchsorted(np.cumsum(lengths[order]), target_events) + 1
    return np.sort(order[:take])


def subset(data, users: np.ndarray):
    """PreparedData restricted to ``users`` (CSR slices; vocabularies unchanged)."""
    from dataclasses import replace

    lengths = np.diff(data.offsets)[users]
    idx = np.concatenate([np.arange(data.offsets[u], data.offsets[u + 1]) for u in users])
    return replace(
        data,
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        items=data.items[idx],
        times=data.times[idx],
        event_types=data.event_types[idx],
        categories=data.categories[idx],
        user_vocab=[data.user_vocab[u] for u in users],
    )


def run_recsys(path: Path, out: Path, sample_events: int) -> dict:
    from recsys_cli.data.formats import TabularReader
    from recsys_cli.data.prepare import prepare_events
    from recsys_cli.data.prepared_data import PreparationConfig
    from recsys_cli.data.window_features import compute_window_features

    t0 = time.perf_counter()
    raw = TabularReader(str(path), COLUMNS).read()
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = prepare_events(raw, PreparationConfig(**PREPARATION))
    prepare_s = time.perf_counter() - t0
    del raw
    t0 = time.perf_counter()
    feats = compute_window_features(data, scales())
    features_s = time.perf_counter() - t0
    result = {
        "read_s": read_s,
        "prepare_s": prepare_s,
        "features_s": features_s,
        "peak_rss_gb": peak_rss_gb(),
        "users": data.num_users,
        "items": data.num_items,
        "events": data.num_events,
        "features_shape": list(feats.stats.shape),
    }
    del feats
    # the subsample on which pandas computes window statistics: same users, timed here too
    users = subsample_users(data.num_users, np.diff(data.offsets), sample_events)
    small = subset(data, users)
    t0 = time.perf_counter()
    small_feats = compute_window_features(small, scales())
    result["sample_features_s"] = time.perf_counter() - t0
    result["sample_events"] = small.num_events
    np.savez(
        out,
        sample_users=users,
        starts=small_feats.starts,
        stats=small_feats.stats,
        offsets=data.offsets,
        items=data.items,
        times=data.times,
    )
    return result


# -- phase 3: pandas -----------------------------------------------------------------------------


def pandas_prepare(path: Path, min_user: int, min_item: int):
    """The preparation steps in idiomatic pandas; returns the sorted frame with codes."""
    import pandas as pd

    df = pd.read_parquet(path)
    df = df.drop_duplicates(["user_id", "item_id", "timestamp", "event_type"], keep="first")
    while True:  # k-core: items, then users, until nothing changes
        before = len(df)
        df = df[df.groupby("item_id")["item_id"].transform("size") >= min_item]
        df = df[df.groupby("user_id")["user_id"].transform("size") >= min_user]
        if len(df) == before:
            break
    df = df.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    out = pd.DataFrame(
        {
            "user": pd.factorize(df["user_id"], sort=True)[0],
            "item": pd.factorize(df["item_id"], sort=True)[0] + 1,
            "etype": pd.factorize(df["event_type"], sort=True)[0] + 1,  # NaN -> -1 -> 0
            "cat": pd.factorize(df["category"], sort=True)[0] + 1,
            "ts": df["timestamp"],
            "t": (df["timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1),
        }
    )
    offsets = np.concatenate([[0], np.cumsum(np.bincount(out["user"].to_numpy()))])
    return out, offsets


def pandas_window_stats(df, num_types: int):
    """[E, S, F] window statistics of a sorted frame (columns user, item, cat, etype, ts, t)."""
    import pandas as pd
    from pandas.api.indexers import BaseIndexer

    class WindowIndexer(BaseIndexer):
        """Windows [start[i], i] given by precomputed starts."""

        def get_window_bounds(
            self, num_values=0, min_periods=None, center=None, closed=None, step=None
        ):
            return self.start.astype(np.int64), np.arange(1, num_values + 1, dtype=np.int64)

    gap_scale = math.log1p(365 * 86400.0)
    n = len(df)
    pos = np.arange(n)
    df = df.assign(one=1.0)
    first = df.groupby("user").cumcount().to_numpy() == 0
    gaps = df["t"].diff().fillna(0).to_numpy(dtype=np.float64, copy=True)
    gaps[first] = 0.0
    g2 = pd.Series(gaps**2)
    t = df["t"].to_numpy()
    onehot = [pd.Series((df["etype"].to_numpy() == k + 1).astype(float)) for k in range(num_types)]
    by_user = df.groupby("user", sort=False)
    out = np.zeros((n, len(SCALES), 6 + num_types), dtype=np.float32)
    for s, (_, max_events, seconds, last) in enumerate(SCALES):
        cap = max_events if last is None else min(last, max_events)
        count = by_user["one"].rolling(cap, min_periods=1).sum().to_numpy()
        if seconds is not None:
            in_time = (
                df.groupby("user", sort=False)
                .rolling(f"{seconds}s", on="ts", closed="both")["one"]
                .sum()
                .to_numpy()
            )
            count = np.minimum(count, in_time)  # both windows end at the anchor: the shorter wins
        start = (pos - count + 1).astype(np.int64)
        window = WindowIndexer(start=start)

        def distinct(col: str, window=window) -> np.ndarray:
            return (
                df[col]
                .rolling(window, min_periods=1)
                .apply(lambda x: len(np.unique(x)), raw=True)
                .to_numpy()
            )

        n_gaps = np.maximum(count - 1, 1)
        mean_gap = (t - t[start]) / n_gaps
        sq = g2.rolling(window, min_periods=1).sum().to_numpy() - g2.to_numpy()[start]
        var = np.maximum(sq / n_gaps - mean_gap**2, 0.0)
        out[:, s, 0] = np.log1p(count) / math.log1p(max_events)
        out[:, s, 1] = distinct("item") / count
        out[:, s, 2] = distinct("cat") / count
        out[:, s, 3] = np.log1p(mean_gap) / gap_scale
        out[:, s, 4] = np.log1p(np.sqrt(var)) / gap_scale
        out[:, s, 5] = np.log1p(gaps) / gap_scale
        for k, column in enumerate(onehot):
            out[:, s, 6 + k] = column.rolling(window, min_periods=1).sum().to_numpy() / count
    return out


def run_pandas(path: Path, recsys_arrays: Path) -> dict:
    ref = np.load(recsys_arrays)
    t0 = time.perf_counter()
    df, offsets = pandas_prepare(
        path, PREPARATION["min_user_events"], PREPARATION["min_item_events"]
    )
    prepare_s = time.perf_counter() - t0
    same = (
        np.array_equal(offsets, ref["offsets"])
        and np.array_equal(df["item"].to_numpy(), ref["items"])
        and np.array_equal(df["t"].to_numpy(), ref["times"])
    )
    rss_prepare = peak_rss_gb()
    users = ref["sample_users"]
    sample = df[np.isin(df["user"].to_numpy(), users)].reset_index(drop=True)
    num_types = int(df["etype"].max())
    del df
    t0 = time.perf_counter()
    stats = pandas_window_stats(sample, num_types)
    stats_s = time.perf_counter() - t0
    return {
        "prepare_s": prepare_s,
        "arrays_equal_to_recsys": bool(same),
        "sample_events": len(sample),
        "sample_stats_s": stats_s,
        "max_abs_diff_to_recsys": float(np.abs(stats - ref["stats"]).max()),
        "peak_rss_prepare_gb": rss_prepare,
        "peak_rss_gb": peak_rss_gb(),
    }


# -- driver --------------------------------------------------------------------------------------


def child(phase: str, args: argparse.Namespace, workdir: Path) -> dict:
    """Run one phase in a fresh interpreter and return its JSON result."""
    result = workdir / f"{phase}.json"
    cmd = [sys.executable, __file__, "--phase", phase, "--workdir", str(workdir)]
    cmd += ["--events", str(args.events), "--pandas-events", str(args.pandas_events)]
    subprocess.run(cmd, check=True)
    return json.loads(result.read_text())


def table(cmd: str, gen: dict, rec: dict, pan: dict | None) -> str:
    E = rec["events"]
    rows = [
        "| step | recsys (polars + numpy) | pandas | pandas / recsys |",
        "|---|---|---|---|",
        f"| generation ({gen['raw_events']:,} events, {gen['num_users']:,} users; not compared) "
        f"| {gen['generate_s']:.1f} s (+ {gen['shuffle_write_s']:.1f} s shuffle + write) | — | — |",
    ]
    prep = rec["read_s"] + rec["prepare_s"]
    if pan:
        rows.append(
            f"| read + prepare (dedup, k-core, ids, stable sort, CSR) -> {E:,} events "
            f"| {prep:.1f} s (read {rec['read_s']:.1f} + prepare {rec['prepare_s']:.1f}) "
            f"| {pan['prepare_s']:.1f} s | {pan['prepare_s'] / prep:.1f}x |"
        )
        n_s = pan["sample_events"]
        rows.append(
            f"| window statistics, 4 scales, measured on a {n_s:,}-event user subsample "
            f"| {rec['sample_features_s']:.2f} s | {pan['sample_stats_s']:.1f} s "
            f"| {pan['sample_stats_s'] / rec['sample_features_s']:.0f}x |"
        )
        extrapolated = pan["sample_stats_s"] * E / n_s
        rows.append(
            f"| window statistics, 4 scales, all {E:,} events "
            f"| {rec['features_s']:.1f} s (measured) | ~{extrapolated:,.0f} s (EXTRAPOLATED from the subsample) "
            f"| ~{extrapolated / rec['features_s']:.0f}x |"
        )
        total_r = prep + rec["features_s"]
        total_p = pan["prepare_s"] + extrapolated
        rows.append(
            f"| **total at {E:,} events** | **{total_r:.1f} s** | ~{total_p:,.0f} s (partly extrapolated) "
            f"| ~{total_p / total_r:.0f}x |"
        )
        rows.append(
            f"| peak RSS | {rec['peak_rss_gb']:.2f} GB | {pan['peak_rss_prepare_gb']:.2f} GB (prepare) | — |"
        )
    else:
        rows.append(f"| read + prepare -> {E:,} events | {prep:.1f} s | (skipped) | |")
        rows.append(f"| window features, 4 scales | {rec['features_s']:.1f} s | (skipped) | |")
        rows.append(f"| peak RSS | {rec['peak_rss_gb']:.2f} GB | | |")
    spans = [
        f"{name} ({f'{sec}s' if sec else f'last {last}' if last else 'all'}, <= {cap} events)"
        for name, cap, sec, last in SCALES
    ]
    notes = [
        "",
        f"Command: `{cmd}` (machine: {os.cpu_count()} CPU cores).",
        f"Scales: {', '.join(spans)}; preparation: {PREPARATION}; "
        f"window features array {rec['features_shape']} float32.",
    ]
    if pan:
        notes.append(
            f"Checks: pandas prepared arrays equal recsys's: {pan['arrays_equal_to_recsys']}; "
            f"max |pandas - recsys| window statistic on the subsample: {pan['max_abs_diff_to_recsys']:.2e}."
        )
    return "\n".join(rows + notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events", type=int, default=10_000_000, help="synthetic events to generate"
    )
    parser.add_argument(
        "--pandas-events", type=int, default=200_000, help="subsample for pandas window stats"
    )
    parser.add_argument("--skip-pandas", action="store_true", help="only the recsys phases")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="folder for events.parquet (default: a temp dir)"
    )
    parser.add_argument("--phase", choices=["generate", "recsys", "pandas"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    if args.phase:
        workdir = args.workdir
        events = workdir / "events.parquet"
        if args.phase == "generate":
            result = generate(args.events, events)
        elif args.phase == "recsys":
            result = run_recsys(events, workdir / "recsys_arrays.npz", args.pandas_events)
        else:
            result = run_pandas(events, workdir / "recsys_arrays.npz")
        (workdir / f"{args.phase}.json").write_text(json.dumps(result))
        return

    cmd = "python scripts/bench_prepare.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="bench_prepare_", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        gen = child("generate", args, workdir)
        print(f"generated {gen['raw_events']:,} events in {gen['generate_s']:.1f} s", flush=True)
        rec = child("recsys", args, workdir)
        print(f"recsys: {json.dumps(rec)}", flush=True)
        pan = None if args.skip_pandas else child("pandas", args, workdir)
        if pan:
            print(f"pandas: {json.dumps(pan)}", flush=True)
    print()
    print(table(cmd.strip(), gen, rec, pan))


if __name__ == "__main__":
    main()
