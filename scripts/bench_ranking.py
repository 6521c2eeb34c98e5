"""Time full-catalogue ranking metrics on a large random catalogue.

Scores ``--batches`` chunks of ``--rows`` users against a random ``[--items + 1, 64]`` item table
and accumulates :class:`recsys_cli.training.metrics.RankingMetrics` (K = 1, 5, 10, 20, 50 seen
items per user), as the evaluation of a large catalogue does. Prints milliseconds per user and
coverage@20 (a checksum: two versions of the metrics must print the same).

    python scripts/bench_ranking.py                       # this checkout
    python scripts/bench_ranking.py --repo ../other-checkout
    farm-bench -n 3 --vs "python scripts/bench_ranking.py --repo OLD" -- python scripts/bench_ranking.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--items", type=int, default=939_262)
    parser.add_argument("--rows", type=int, default=35, help="users scored at once (a chunk)")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    import torch

    from recsys_cli.training.metrics import RankingMetrics

    torch.manual_seed(args.seed)
    table = torch.randn(args.items + 1, 64)
    metrics = RankingMetrics([1, 5, 10, 20], args.items)
    start = time.perf_counter()
    for _ in range(args.batches):
        states = torch.randn(args.rows, 64)
        targets = torch.randint(1, args.items + 1, (args.rows,))
        seen = torch.randint(0, args.items + 1, (args.rows, 50))
        metrics.update(states @ table.T, targets, seen)
    per_user = (time.perf_counter() - start) / (args.rows * args.batches)
    print(f"{per_user * 1000:.2f} ms per user; coverage@20 {metrics.compute()['coverage@20']:.6f}")


if __name__ == "__main__":
    main()
