"""The benchmark loop: build the contenders, probe their memory, then per epoch train them step by
step on the same batches (the order rotating every step) and evaluate them batch by batch."""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from recsys_cli.builders import build_datamodule

from .contenders import (
    ALL_CONTENDERS,
    BASE,
    METRIC,
    Contender,
    ContenderSpec,
    build_product,
    build_reference,
    compose,
    parse_contender,
    product_overrides,
    reference_fits,
)
from .machine import MemoryProbe, matmul_gflops, mb, rss_bytes
from .presets import PRESETS, Preset
from .reference import DESCRIPTION as REFERENCE_DESCRIPTION
from .reference import INITS
from .report import add_ratios, fmt, markdown_table, summarise, write_json


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Training and evaluation speed, memory and time to quality of the product's "
        "sequence models against a reference SASRec, in one process, on identical batches.",
        epilog="See scripts/speedbench/__init__.py for what is measured and how.",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    p.add_argument(
        "--contenders", default=",".join(ALL_CONTENDERS), help=f"comma-separated, of {', '.join(ALL_CONTENDERS)}"
    )
    p.add_argument(
        "--baseline", default=None, help="the contender the ratios divide by (default: reference, else the first)"
    )
    p.add_argument("--levels", default=None, help="NDCG@10 levels for time to quality (default: the preset's)")
    p.add_argument("--out", default=None, help="JSON path (default runs/bench_speed/<preset>.json)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--max-steps", type=int, default=None, help="training steps per epoch (default: all; tiny: 2)")
    p.add_argument(
        "--eval-batches",
        type=int,
        default=None,
        help="validation batches per evaluation, evenly spaced over the length-sorted cases (default: all; tiny: 2)",
    )
    p.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "recsys_bench_speed_cache"))
    p.add_argument("--data-path", default=None, help="dataset folder of a real-data preset (ml1m, ml100k)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--reference-init",
        choices=INITS,
        default="sasrec+",
        help="the reference's initial tables: SASRec+'s N(0, 0.02) or unit-norm items and N(0, 1) positions",
    )
    p.add_argument("--matmul-size", type=int, default=None, help="default: preset's (cuda: 4096)")
    p.add_argument("--matmul-reps", type=int, default=None, help="default: 3 on cpu, 20 on cuda")
    p.add_argument(
        "--override", action="append", default=[], help="extra Hydra override for the product (repeatable)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark of ``argv`` (the command line by default); returns what the JSON holds."""
    threads = torch.get_num_threads()
    try:
        return run(parse_args(argv), argv)
    finally:
        torch.set_num_threads(threads)  # in-process callers (the tests) keep their setting


def batches(loader: Any, limit: int | None) -> Iterator[dict[str, torch.Tensor]]:
    """The loader's batches, or ``limit`` of them evenly spaced over the epoch: evaluation goes by
    case length, so the first batches alone would be the shortest histories."""
    if limit is None or limit >= len(loader):
        return iter(loader)
    stride = len(loader) / limit
    ids = list(loader.sampler)  # the case ids of every batch; only the wanted ones are gathered
    return (loader.dataset[ids[int(i * stride)]] for i in range(limit))


def describe_machine(device: torch.device, size: int, reps: int) -> dict[str, Any]:
    return {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # off by default: fp32 matmuls throughout
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "matmul_before": matmul_gflops(device, size, reps),
        # other jobs on the machine change every time measured (docs/gpus-and-clusters.md)
        "load_average_before": list(os.getloadavg()),
    }


class DataModules:
    """One product data module per scales setting and task (the training cases depend on the
    task only: the cloze task adds cases and masks inputs)."""

    def __init__(self, preset: Preset, args: argparse.Namespace, run_dir: Path):
        self.preset, self.args, self.run_dir = preset, args, run_dir
        self.dm: dict[str, Any] = {}
        self.cfg: dict[str, Any] = {}

    def __call__(self, spec: ContenderSpec) -> Any:
        key = spec.dm_key
        if key not in self.dm:
            encoder = "bert" if spec.task == "cloze" else "transformer"
            base = ContenderSpec(encoder, spec.scales, spec.task)
            cfg = compose(product_overrides(self.preset, self.args, self.run_dir, base))
            dm = build_datamodule(cfg)
            dm.load()
            self.dm[key], self.cfg[key] = dm, cfg
        return self.dm[key]


def build_contenders(
    names: list[str], preset: Preset, args: argparse.Namespace, dms: DataModules, device: torch.device
) -> tuple[list[Contender], dict[str, dict[str, Any]]]:
    """The contenders to run and the results dict (a skipped reference has its reason there)."""
    base = dms(BASE)
    spec = base.spec()
    contenders: list[Contender] = []
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        parsed = parse_contender(name)
        if name == "reference":
            fits, why = reference_fits(preset, spec.num_items, device)
            if not fits:
                print(f"reference skipped: {why}", flush=True)
                results[name] = {"skipped": why}
                continue
            c = build_reference(preset, args, base, dms.cfg[BASE.dm_key], device)
        else:
            c = build_product(name, parsed, preset, args, dms(parsed), dms.run_dir, device)
        c.leave_rng()  # its own random stream from here on
        c.record = {
            "kind": c.kind,
            "overrides": c.overrides,
            "parameters": sum(p.numel() for p in c.model.parameters()),
            "flop_model": c.flops.as_dict(),
            "filter_seen": c.filter_seen,
            "epochs": [],
        }
        contenders.append(c)
        results[name] = c.record
    return contenders, results


def probe_memory(contenders: list[Contender], loaders: dict, used: dict, device: torch.device) -> None:
    """The memory probes (also the warm-up): two forward+backward passes, one evaluation batch."""
    probe_batches = {key: list(itertools.islice(iter(loader), 2)) for key, loader in loaders.items()}
    eval_probe = {key: next(iter(dm.val_dataloader())) for key, dm in used.items()}
    for c in contenders:
        with MemoryProbe(device) as train_probe:
            for batch in probe_batches[c.dm_key]:
                c.probe_step(batch)
        c.eval_start()
        with MemoryProbe(device) as eval_probe_mem:
            c.eval_step(eval_probe[c.dm_key])
        c.eval_end()
        c.record["memory"] = {
            "kind": "cuda max_memory_allocated" if device.type == "cuda" else "process RSS (psutil), sampled every 1 ms",
            "persistent_mb": mb(c.persistent_bytes()),
            "train_step_extra_mb": mb(train_probe.extra),
            "train_step_peak_mb": mb(train_probe.peak),
            "eval_batch_extra_mb": mb(eval_probe_mem.extra),
            "eval_batch_peak_mb": mb(eval_probe_mem.peak),
        }


def task_of(dm_key: str) -> str:
    """``none`` -> next_item, ``none/cloze`` -> cloze (:attr:`ContenderSpec.dm_key`)."""
    return dm_key.partition("/")[2] or "next_item"


def train_epoch(
    epoch: int, contenders: list[Contender], loaders: dict, steps: int, preset: Preset
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """One epoch of training, the contenders alternating step by step on the same batches;
    returns each contender's epoch record and each data module's batch-gathering seconds."""
    for loader in loaders.values():
        loader.sampler.set_epoch(epoch)
    for c in contenders:
        c.epoch_start()
    its = {key: iter(loader) for key, loader in loaders.items()}
    data_s = dict.fromkeys(its, 0.0)
    ep = {c.name: {"epoch": epoch + 1, "steps": 0, "positions": 0, "step_seconds": 0.0, "train_flops": 0.0,
                   "encoder_positions": 0, "padding_positions": 0, "positions_without_target": 0}
          for c in contenders}  # fmt: skip
    for step in range(steps):
        got = {}
        for key, it in its.items():
            t0 = time.perf_counter()
            got[key] = next(it)
            data_s[key] += time.perf_counter() - t0
        by_task: dict[str, list[torch.Tensor]] = {}  # the data modules of one task give the same cases
        for key, batch in got.items():
            by_task.setdefault(task_of(key), []).append(batch["targets"])
        if any(not torch.equal(t, ts[0]) for ts in by_task.values() for t in ts[1:]):
            raise RuntimeError(f"epoch {epoch + 1}, step {step}: the data modules gave different cases")
        shift = step % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:  # rotate who goes first
            batch = got[c.dm_key]
            targets = batch["targets"]
            B, L = targets.shape
            M = int((targets > 0).sum())
            valid = int((batch["items"][:, -L:] > 0).sum())
            if c.kind == "reference":  # it computes every batch at the full max_len
                L = preset.max_len
            e = ep[c.name]
            e["step_seconds"] += c.train_step(batch)
            e["steps"] += 1
            e["positions"] += M
            e["train_flops"] += c.flops.train_step(B, L, M)
            e["encoder_positions"] += B * L
            e["padding_positions"] += B * L - valid
            e["positions_without_target"] += B * L - M
    return ep, data_s


def evaluate_epoch(
    contenders: list[Contender], used: dict, eval_batches: int | None, preset: Preset
) -> tuple[dict[str, dict[str, float]], dict[str, float], dict[str, float], dict[str, float], int]:
    """Every contender on the same validation batches, alternating batch by batch; returns each
    one's metrics and seconds, its FLOPs, each data module's gathering seconds and the users."""
    for c in contenders:
        c.eval_start()
    eval_s = {c.name: 0.0 for c in contenders}
    data_s = dict.fromkeys(used, 0.0)
    flops = {c.name: 0.0 for c in contenders}
    users = 0
    its = {key: batches(dm.val_dataloader(), eval_batches) for key, dm in used.items()}
    for i in itertools.count():
        got = {}
        for key, it in its.items():
            t0 = time.perf_counter()
            got[key] = next(it, None)
            data_s[key] += time.perf_counter() - t0
        if any(b is None for b in got.values()):
            break
        users += len(next(iter(got.values()))["targets"])
        shift = i % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            B, L = got[c.dm_key]["targets"].shape
            eval_s[c.name] += c.eval_step(got[c.dm_key])
            flops[c.name] += c.flops.eval_batch(B, preset.max_len if c.kind == "reference" else L)
    values = {}
    for c in contenders:
        values[c.name], end_s = c.eval_end()
        eval_s[c.name] += end_s
    return values, eval_s, flops, data_s, users


def run(args: argparse.Namespace, argv: list[str] | None) -> dict:
    preset = PRESETS[args.preset]
    epochs = args.epochs if args.epochs is not None else preset.epochs
    max_steps = args.max_steps if args.max_steps is not None else preset.max_steps
    eval_batches = args.eval_batches if args.eval_batches is not None else preset.eval_batches
    levels = list(preset.levels) if args.levels is None else [float(x) for x in args.levels.split(",") if x.strip()]
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    for name in names:
        parse_contender(name)
    if len(set(names)) != len(names) or not names:
        raise SystemExit(f"--contenders: give distinct names, got {args.contenders!r}")
    baseline = args.baseline or ("reference" if "reference" in names else names[0])
    if baseline not in names:
        raise SystemExit(f"--baseline {baseline}: not one of --contenders {args.contenders}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    out_path = Path(args.out or f"runs/bench_speed/{args.preset}.json")
    mm_size = args.matmul_size or (4096 if device.type == "cuda" else preset.matmul_size)
    mm_reps = args.matmul_reps or (20 if device.type == "cuda" else 3)

    machine = describe_machine(device, mm_size, mm_reps)
    print(f"# bench_speed --preset {args.preset} ({preset.note}) on {machine['device']}, torch {torch.__version__}, "
          f"{machine['threads']} threads; matmul {mm_size}^2 fp32: {machine['matmul_before']['gflops_best']:.1f} GFLOP/s", flush=True)  # fmt: skip
    if machine["load_average_before"][0] > 0.5:
        print(f"Note: load average {machine['load_average_before'][0]:.2f}: other jobs share this machine, "
              "so the seconds are not those of quiet cores (the ratios are paired)", flush=True)  # fmt: skip

    payload: dict[str, Any] = {"complete": False, "machine": machine}
    with tempfile.TemporaryDirectory(prefix="bench_speed_run_") as run_dir:
        dms = DataModules(preset, args, Path(run_dir))
        contenders, results = build_contenders(names, preset, args, dms, device)
        base = dms(BASE)
        spec, summary = base.spec(), base.summary()
        used = {key: dm for key, dm in dms.dm.items() if any(c.dm_key == key for c in contenders)}
        if not used:
            raise SystemExit("no contender left to run")
        loaders = {key: dm.train_dataloader() for key, dm in used.items()}
        lengths = {key: len(loader) for key, loader in loaders.items()}
        n_batches = min(lengths.values())  # the cloze task's extra cases: its epochs are longer
        steps_per_epoch = min(n_batches, max_steps or n_batches)
        if len({n for key, n in lengths.items() if task_of(key) == "next_item"}) > 1:
            raise RuntimeError(f"the data modules disagree on the number of training batches: {lengths}")
        payload["config"] = {
            "preset": args.preset,
            "preset_settings": preset.as_dict(),
            "epochs": epochs,
            "max_steps": max_steps,
            "steps_per_epoch": steps_per_epoch,
            "eval_batches": eval_batches,
            "levels": levels,
            "device": str(device),
            "seed": args.seed,
            "contenders": names,
            "baseline": baseline,
            "extra_overrides": list(args.override),
            "product_objective": preset.objective,
            "reference": REFERENCE_DESCRIPTION,
            "reference_init": args.reference_init,
            "cache_dir": args.cache_dir,
            "argv": sys.argv if argv is None else list(argv),
        }
        payload["data"] = {
            **summary,
            "num_items": spec.num_items,
            "history_len": {k: dm.history_len for k, dm in dms.dm.items()},
        }
        payload["contenders"] = results
        print(f"data: {summary['users']} users, {summary['items']} items, {summary['events']} events, "
              f"{summary['train_cases']} training cases, {summary['val_cases']} validation cases; "
              f"{steps_per_epoch} steps per epoch; contenders: {', '.join(c.name for c in contenders)}", flush=True)  # fmt: skip

        probe_memory(contenders, loaders, used, device)
        for epoch in range(epochs):
            ep, data_s = train_epoch(epoch, contenders, loaders, steps_per_epoch, preset)
            values, eval_s, flops, eval_data_s, users = evaluate_epoch(contenders, used, eval_batches, preset)
            for c in contenders:
                e = ep[c.name]
                e["data_seconds"] = data_s[c.dm_key]
                e["epoch_seconds"] = e["step_seconds"] + data_s[c.dm_key]
                e["eval_seconds"] = eval_s[c.name]
                e["eval_data_seconds"] = eval_data_s[c.dm_key]
                e["eval_users"] = users
                e["eval_flops"] = flops[c.name]
                e[METRIC] = float(values[c.name].get(METRIC, float("nan")))
                e["val"] = {k: v for k, v in values[c.name].items() if "/" not in k}
                c.record["epochs"].append(e)
                c.record["summary"] = summarise(c, levels, machine["matmul_before"]["gflops_best"])
            add_ratios(results, baseline)
            positions = {c.name: ep[c.name]["positions"] for c in contenders}
            if any(len({positions[c.name] for c in contenders if c.task == t}) > 1 for t in {c.task for c in contenders}):
                raise RuntimeError(f"epoch {epoch + 1}: contenders saw different supervised positions: {positions}")
            line = ", ".join(
                f"{c.name} {ep[c.name]['epoch_seconds']:.1f}s ndcg@10={ep[c.name][METRIC]:.4f}" for c in contenders
            )
            print(f"epoch {epoch + 1}/{epochs}: {line}", flush=True)
            write_json(out_path, payload)

    finish(payload, contenders, results, device, mm_size, mm_reps, levels, preset, out_path)
    return payload


def finish(payload, contenders, results, device, mm_size, mm_reps, levels, preset, out_path) -> None:
    """The machine again, the peak, the final summaries; writes the JSON and prints the table."""
    machine = payload["machine"]
    machine["matmul_after"] = matmul_gflops(device, mm_size, mm_reps)
    peak = max(machine["matmul_before"]["gflops_best"], machine["matmul_after"]["gflops_best"])
    machine["matmul_gflops"] = peak
    machine["rss_mb_at_end"] = mb(rss_bytes())
    machine["load_average_after"] = list(os.getloadavg())
    if device.type == "cuda":
        machine["cuda_max_memory_allocated_mb"] = mb(torch.cuda.max_memory_allocated(device))
    for c in contenders:
        c.record["summary"] = summarise(c, levels, peak)
    add_ratios(results, payload["config"]["baseline"])
    # the product's batches (their common padding trimmed) and, with a reference, the full layout
    first = next((c for c in contenders if c.kind == "product"), None)
    full = next((c for c in contenders if c.kind == "reference"), None)
    data = payload["data"]
    data["padding_share"] = first.record["summary"]["padding_share"] if first else None
    data["no_target_share"] = first.record["summary"]["no_target_share"] if first else None
    data["padding_share_untrimmed"] = full.record["summary"]["padding_share"] if full else None
    payload["complete"] = True
    write_json(out_path, payload)

    print(f"\nmatmul fp32 peak {peak:.1f} GFLOP/s ({mm_size}^2, best of {mm_reps}, before and after); "
          f"padding share of the product's B x L positions {fmt(data['padding_share'], '.3f')} "
          f"(untrimmed, as the reference computes them: {fmt(data['padding_share_untrimmed'], '.3f')}), "
          f"positions without a target {fmt(data['no_target_share'], '.3f')}")  # fmt: skip
    print(f"product objective: {preset.objective}; reference: full CE at all positions. Ratios: contender / "
          f"{payload['config']['baseline']} (x base > 1 means more throughput, or more seconds per epoch or step, "
          "or more memory).\n")  # fmt: skip
    print(markdown_table(payload))
    print(f"\nJSON: {out_path}")
