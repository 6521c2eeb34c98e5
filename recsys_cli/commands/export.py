"""``recsys export ckpt=PATH format=onnx|torchscript``: the run's model as one file, checked
against PyTorch."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from recsys_cli.commands import Command, command_arguments
from recsys_cli.errors import ConfigError

HELP = """usage: recsys export ckpt=PATH [format=onnx|torchscript] [quantize=int8] [k=10] [output=DIR]

Writes the run's sequence model as one ONNX or TorchScript file that maps a batch of histories
(item ids, times, event types..., and the window features of multi-scale models) to the top-k
items and their scores (k=null: every item's score), with a dynamic batch size; model.json
describes its inputs and outputs, items.parquet maps item indices to raw ids. The command checks
the file against PyTorch on real batches (max absolute score difference, top-10 agreement) and
reports its size and CPU latency per user. ONNX needs the export extra: pip install 'recsys-cli[export]'."""


def check(cfg: DictConfig) -> None:
    """What can be checked before the run is rebuilt (the format's packages included)."""
    if cfg.format not in ("onnx", "torchscript"):
        raise ConfigError(f"format={cfg.format!r}: use format=onnx or format=torchscript")
    if cfg.quantize not in (None, "int8"):
        raise ConfigError(f"quantize={cfg.quantize!r}: use quantize=int8, or leave it out (float32)")
    if cfg.k is not None and (not isinstance(cfg.k, int) or isinstance(cfg.k, bool) or cfg.k < 1):
        raise ConfigError(f"k={cfg.k!r}: a positive number of items (e.g. k=10), or k=null for every item's score")
    if cfg.filter_seen is not None and not isinstance(cfg.filter_seen, bool):
        raise ConfigError(f"filter_seen={cfg.filter_seen!r}: use true, false or null (the run's own)")
    for key in ("check_users", "batch_size", "repeats"):
        if cfg[key] is None or cfg[key] < 1:
            raise ConfigError(f"{key}={cfg[key]}: use a positive number")
    if cfg.format == "onnx":
        missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigError(f"format=onnx needs {' and '.join(missing)}: pip install 'recsys-cli[export]' (or pip install onnx onnxruntime)")


def output_folder(cfg: DictConfig, run_dir: Path | None) -> Path:
    """``output``, or ``<run>/export/<format>[-int8]``; an existing folder only with overwrite."""
    if cfg.output is not None:
        folder = Path(str(cfg.output))
    else:
        base = run_dir if run_dir is not None else Path(str(cfg.ckpt)).resolve().parent
        folder = base / "export" / (cfg.format + ("-int8" if cfg.quantize else ""))
    if folder.exists() and not cfg.overwrite:
        raise ConfigError(f"output folder {folder} exists; choose another (output=DIR) or replace it with overwrite=true")
    return folder


def run(argv: list[str]) -> None:
    """Export, check against PyTorch, print and store the check."""
    import torch

    from recsys_cli import export as ex
    from recsys_cli.checkpoints import load_run_checkpoint
    from recsys_cli.data.queries import whole_history_cases
    from recsys_cli.runs import load_run

    cfg, rest = command_arguments("export", argv)
    check(cfg)
    refusal = ex.export_refusal(OmegaConf.create(load_run_checkpoint(str(cfg.ckpt))["recsys"]["config"]))
    if refusal:
        raise ConfigError(f"cannot export this run: {refusal}")
    loaded = load_run(str(cfg.ckpt), rest)
    folder = output_folder(cfg, loaded.run_dir)
    model = loaded.module.model.cpu().eval()
    model.refresh_items()
    filter_seen = loaded.module.filter_seen if cfg.filter_seen is None else cfg.filter_seen
    k = None if cfg.k is None else min(cfg.k, loaded.data.num_items)

    users = np.arange(min(cfg.check_users, loaded.data.num_users))
    cases = whole_history_cases(loaded.dm, users)
    fields = ex.input_fields(cases[np.array([0])], filter_seen)
    batches = [ex.export_inputs(cases, users[i : i + cfg.batch_size], fields) for i in range(0, len(users), cfg.batch_size)]
    graph = ex.ScoringGraph(model, fields, k, filter_seen).eval()
    eager = ex.Runner("eager", graph=graph)

    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if cfg.format == "onnx":
            name = "model.onnx"
            inputs = ex.onnx_export(graph, batches[0], tmp / name)
            if cfg.quantize:
                ex.quantize_onnx(tmp / name, tmp / "model.int8.onnx")
                os.replace(tmp / "model.int8.onnx", tmp / name)
        else:
            name, inputs = "model.pt", fields
            ex.torchscript_export(ex.quantize_torch(graph) if cfg.quantize else graph, batches[0], tmp / name)
        result = ex.check_against_eager(ex.Runner(cfg.format, tmp / name), eager, fields, batches, cfg.repeats)
        size = ex.file_size(tmp / name)
        info = {
            "format": cfg.format, "quantize": cfg.quantize, "k": k, "filter_seen": filter_seen,
            "checkpoint": str(cfg.ckpt), "num_items": loaded.data.num_items, "max_len": loaded.dm.max_len,
            "history_len": loaded.dm.history_len, "scales": list(loaded.module.model.scale_names),
            "event_types": [str(t) for t in loaded.data.event_type_vocab],
            "stat_names": list(loaded.dm.spec().stat_names) if "scale_stats" in inputs else [],
            "file_bytes": size, "check": vars(result), "check_users": len(users),
        }  # fmt: skip
        described = ex.describe(fields, batches[0], k, info)
        described["inputs"] = [i for i in described["inputs"] if i["name"] in inputs]
        ex.write_json(tmp / "model.json", described)
        ex.write_vocabulary(tmp / "items.parquet", loaded.item_vocab, loaded.data.item_titles)
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    kind = f"{cfg.format}{' int8' if cfg.quantize else ''}"
    print(f"Exported {kind}: {folder / name} ({size / 1e6:.2f} MB), inputs {', '.join(inputs)}")
    print(f"Check against PyTorch on {len(users)} users: max |score difference| {result.max_abs_diff:.2e}, top-10 agreement {result.top10_agreement:.4f}")
    print(
        f"CPU latency per user (median of {cfg.repeats}, {torch.get_num_threads()} threads): one user per call "
        f"{result.latency_ms_batch1:.3f} ms (PyTorch {result.eager_ms_batch1:.3f} ms), {cfg.batch_size} per call "
        f"{result.latency_ms_per_user_batched:.4f} ms (PyTorch {result.eager_ms_per_user_batched:.4f} ms)"
    )
    print(f"Inputs and outputs: {folder / 'model.json'}; item ids: {folder / 'items.parquet'}", file=sys.stdout)


COMMAND = Command(
    name="export",
    summary="export a model:          recsys export ckpt=PATH format=onnx|torchscript [quantize=int8]",
    help=HELP,
    run=run,
    order=4,
)
