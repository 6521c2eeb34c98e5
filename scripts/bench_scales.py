"""Training-step time of multi-scale vs single-scale models with the same encoder and max_len.

    python scripts/bench_scales.py                      # transformer and GRU, default sizes
    python scripts/bench_scales.py --steps 30 --encoders transformer

Both models are built from the real configs and trained on the same batches of the default
synthetic dataset, timed alternately in one process (so machine load affects both alike).
Reports median ms/step and the ratio multi / single (target: <= 1.5).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_dir

from recsys_cli.config_paths import CONF_DIR
from recsys_cli.train import build_datamodule, build_module


def build(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["paths.run_dir=/tmp/recsys-bench", *overrides])
    dm = build_datamodule(cfg)
    dm.load()
    module = build_module(cfg, dm, {})
    return dm, module, module.configure_optimizers()


def step(module, optimizer, batch) -> None:
    z = module.model(batch)
    sel = batch["targets"] > 0
    loss = module.loss(z[sel], batch["targets"][sel], module.model.output_embeddings())
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
    print("| encoder | single ms/step | multi (4 scales) ms/step | ratio |")
    print("|---|---|---|---|")
    for encoder in args.encoders:
        common = [f"model/encoder={encoder}", *args.extra]
        dm, single, opt_s = build([*common, args.single])
        _, multi, opt_m = build([*common, args.multi])
        # both models need batches with the multi-scale history: build from the multi data module
        dm_multi = build_datamodule_for(multi, common, args.multi)
        batches = iter(dm_multi.train_dataloader())
        times = {"single": [], "multi": []}
        for i in range(args.steps + 3):
            batch = next(batches)
            for name, module, opt in (("single", single, opt_s), ("multi", multi, opt_m)):
                t0 = time.perf_counter()
                step(module, opt, batch)
                if i >= 3:  # warm-up
                    times[name].append(time.perf_counter() - t0)
        s, m = statistics.median(times["single"]) * 1e3, statistics.median(times["multi"]) * 1e3
        print(f"| {encoder} | {s:.1f} | {m:.1f} | {m / s:.2f} |")


def build_datamodule_for(module, common, scales_override):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["paths.run_dir=/tmp/recsys-bench", *common, scales_override])
    dm = build_datamodule(cfg)
    dm.load()
    return dm


if __name__ == "__main__":
    main()
