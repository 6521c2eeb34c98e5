"""Training-step time of multi-scale vs single-scale models with the same encoder and max_len.

    python scripts/bench_scales.py                         # transformer and GRU, default config
    python scripts/bench_scales.py --single scales=all_only --steps 30

The models are built from the real configs. Each gets batches from its own data module (a
multi-scale model's batches carry older history and window fields that a plain encoder's lack)
for the same training cases, and the models are timed alternately, step by step, in one process,
so that machine load affects them alike. Reports the median ms per optimiser step (forward,
full-catalogue loss, backward, update) and the ratio multi / single; the design target is <= 1.5.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from recsys_cli.builders import build_datamodule, build_module
from recsys_cli.config_paths import CONF_DIR


def build(overrides: list[str], cache_dir: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=["paths.run_dir=/tmp/recsys-bench", f"paths.cache_dir={cache_dir}", *overrides]
        )
    dm = build_datamodule(cfg)
    dm.load()
    module = build_module(cfg, dm, {})
    return dm.train_cases(), module, module.configure_optimizers(), dm.batch_size


def step(module, optimizer, batch) -> None:
    loss = module.training_loss(batch).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--encoders", nargs="+", default=["transformer", "gru"])
    parser.add_argument("--single", default="scales=none", help="override giving the single-scale model")
    parser.add_argument("--multi", default="scales=session_day_month_all")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for both models")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"single: {args.single}; multi: {args.multi}; extra: {' '.join(args.extra) or '-'}")
    print("| encoder | single ms/step | multi ms/step | ratio |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache_dir:
        for encoder in args.encoders:
            common = [f"model/encoder={encoder}", *args.extra]
            models = {
                "single": build([*common, args.single], cache_dir),
                "multi": build([*common, args.multi], cache_dir),
            }
            n = len(models["single"][0])
            assert n == len(models["multi"][0]), "both models must train on the same cases"
            batch_size = models["multi"][3]
            order = np.random.default_rng(0).permutation(n)
            times: dict[str, list[float]] = {"single": [], "multi": []}
            for i in range(args.steps + 3):
                ids = order[(i * batch_size) % n :][:batch_size]
                for name, (cases, module, opt, _) in models.items():
                    batch = cases[ids]
                    t0 = time.perf_counter()
                    step(module, opt, batch)
                    if i >= 3:  # warm-up
                        times[name].append(time.perf_counter() - t0)
            s, m = (statistics.median(times[k]) * 1e3 for k in ("single", "multi"))
            print(f"| {encoder} | {s:.1f} | {m:.1f} | {m / s:.2f} |", flush=True)


if __name__ == "__main__":
    main()
