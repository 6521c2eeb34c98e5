"""``recsys export``: every exportable switch of the sequence model round-trips through ONNX and
TorchScript with the eager model's scores and top-10 on real query batches; the command writes
the file, its description and the vocabulary, checks them, and refuses what cannot be exported in
one line before any heavy work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import TINY, TINY_BASELINE, assert_one_error_line, run_recsys

from recsys_cli.builders import build_datamodule, build_module
from recsys_cli.checkpoints import make_run_info
from recsys_cli.compose import compose_train
from recsys_cli.data.queries import whole_history_cases
from recsys_cli.export import (
    Runner,
    ScoringGraph,
    check_against_eager,
    export_inputs,
    export_refusal,
    input_fields,
    onnx_export,
    quantize_torch,
    torchscript_export,
)

# the model's switches that change what the exported graph computes (model/... group options and
# model.* keys); the count baselines, Mult-VAE and context_request_time are refused (see below)
SWITCHES = {
    "transformer": ["scales=none"],
    "multiscale": [],
    "gru": ["model/encoder=gru"],
    "lstm": ["model/encoder=lstm", "scales=session_all"],
    "attention_fusion": ["model/fusion=attention"],
    "concat_fusion": ["model/fusion=concat"],
    "cosine": ["model/scoring=cosine"],
    "side_and_context": ["model.use_categories=true", "model.context=[hour,weekday,gap]"],
    "user_vector": ["model.user_embedding=true"],
    "vae": ["model/latent=vae"],
    "own_encoders": ["model.share_encoder=false", "scales=session_all"],
    # time inside attention and the cloze-trained bidirectional encoder (docs/model.md)
    "hstu": ["scales=none", "model.encoder.time_bias=hstu"],
    "tisasrec": ["scales=none", "model.encoder.time_bias=tisasrec"],
    "head_windows": ["scales=none", "model.encoder.num_heads=4", "model.encoder.head_windows=[30m,1d,30d,null]"],
    "bert4rec": ["scales=none", "model/encoder=bert", "task=cloze"],
}


def tiny_model(tmp_path: Path, cache_dir: Path, overrides: list[str]):
    """A tiny untrained model (its random weights are as good as trained ones for a round trip)
    and query batches of its data's users."""
    cfg = compose_train([*TINY, *overrides])
    cfg.paths.run_dir, cfg.paths.cache_dir = str(tmp_path / "run"), str(cache_dir)
    dm = build_datamodule(cfg)
    data = dm.load()
    module = build_module(cfg, dm, make_run_info(cfg, data.item_vocab, data.fingerprint)).eval()
    return cfg, dm, module


# the default run checks the plain and the multi-scale Transformer; -m slow every other switch
QUICK = ("transformer", "multiscale")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize(
    "switch", [pytest.param(s, marks=() if s in QUICK else pytest.mark.slow) for s in SWITCHES]
)
def test_every_exportable_switch_round_trips(switch, fmt, tmp_path, cache_dir):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    cfg, dm, module = tiny_model(tmp_path, cache_dir, SWITCHES[switch])
    assert export_refusal(cfg) is None
    torch.manual_seed(0)
    cases = whole_history_cases(dm, np.arange(dm.load().num_users))
    filter_seen, k = switch in ("transformer", "multiscale", "vae"), 10
    fields = input_fields(cases[np.array([0])], filter_seen)
    assert ("window_start" in fields) == (module.model.pooling is not None)
    batches = [export_inputs(cases, np.arange(0, 32), fields), export_inputs(cases, np.arange(32, 60), fields)]
    graph = ScoringGraph(module.model, fields, None if switch == "gru" else k, filter_seen).eval()
    path = tmp_path / f"model.{fmt}"
    (onnx_export if fmt == "onnx" else torchscript_export)(graph, batches[0], path)
    eager = Runner("eager", graph=graph)
    check = check_against_eager(Runner(fmt, path), eager, fields, batches, repeats=1)
    assert check.max_abs_diff < 1e-4 and check.top10_agreement == 1.0, check
    # the batch size is free: one user alone gives that user's row of a batch
    one = tuple(t[5:6] for t in batches[0])
    np.testing.assert_allclose(Runner(fmt, path)(fields, one)[0], eager(fields, batches[0])[0][5:6], atol=1e-4)
    if filter_seen:  # a seen item is never among the exported top-k
        seen = batches[0][fields.index("seen")]
        top = Runner(fmt, path)(fields, batches[0])[1]
        assert not any(set(row) & (set(s) - {0}) for row, s in zip(top.tolist(), seen.tolist(), strict=True))


def test_int8_torchscript_stays_close_to_float(tmp_path, cache_dir):
    cfg, dm, module = tiny_model(tmp_path, cache_dir, ["scales=none"])
    cases = whole_history_cases(dm, np.arange(60))
    fields = input_fields(cases[np.array([0])], False)
    batches = [export_inputs(cases, np.arange(60), fields)]
    graph = ScoringGraph(module.model, fields, None, False).eval()
    torchscript_export(quantize_torch(graph), batches[0], tmp_path / "q.pt")
    check = check_against_eager(Runner("torchscript", tmp_path / "q.pt"), Runner("eager", graph=graph), fields, batches, 1)
    assert 0 < check.max_abs_diff < 0.1 and check.top10_agreement > 0.8, check


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("export") / "run"
    result = run_recsys(["train", *TINY, "metrics.filter_seen=true", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"])
    assert result.code == 0, result.err[-3000:]
    return run_dir / "checkpoints" / "best.ckpt"


@pytest.mark.parametrize(("fmt", "quantize"), [("torchscript", "null"), ("onnx", "null"), ("onnx", "int8")])
def test_export_writes_the_model_its_description_and_the_vocabulary(fmt, quantize, trained, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / "exported"
    result = run_recsys(["export", f"ckpt={trained}", f"format={fmt}", f"quantize={quantize}", f"output={out}", "repeats=2"])
    assert result.code == 0, result.err[-3000:]
    name = "model.onnx" if fmt == "onnx" else "model.pt"
    assert sorted(p.name for p in out.iterdir()) == sorted([name, "model.json", "items.parquet"])
    described = json.loads((out / "model.json").read_text())
    names = [i["name"] for i in described["inputs"]]
    assert names[0] == "items" and {"window_start", "scale_stats", "seen"} <= set(names)
    assert [o["name"] for o in described["outputs"]] == ["top_scores", "top_items"]
    assert described["filter_seen"] is True and described["file_bytes"] == (out / name).stat().st_size
    check = described["check"]
    assert check["top10_agreement"] == 1.0 if quantize == "null" else check["top10_agreement"] > 0.8
    assert f"top-10 agreement {check['top10_agreement']:.4f}" in result.out and "CPU latency per user" in result.out
    items = pl.read_parquet(out / "items.parquet")
    assert items.columns == ["index", "item_id", "title"] and items["index"].to_list() == list(range(1, 81))
    again = run_recsys(["export", f"ckpt={trained}", f"format={fmt}", f"output={out}"])
    assert_one_error_line(again, f"output folder {out} exists", "overwrite=true")


def test_what_cannot_be_exported_is_one_line_before_any_work(cache_dir, tmp_path):
    run_dir = tmp_path / "popularity"
    result = run_recsys(["train", *TINY_BASELINE, "model=popularity", "scales=none", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"])
    assert result.code == 0, result.err[-3000:]
    refused = run_recsys(["export", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", "format=torchscript"])
    assert_one_error_line(refused, "cannot export this run", "model=sequential", "count")
    assert "Overrides of the run's config" not in refused.out  # refused before the run is rebuilt
    assert "context_request_time" in export_refusal(compose_train(["model.context_request_time=true"]))


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["format=tflite"], ["format='tflite'", "onnx", "torchscript"]),
        (["quantize=int4"], ["quantize='int4'", "int8"]),
        (["k=0"], ["k=0"]),
        (["repeats=0"], ["repeats=0"]),
    ],
)
def test_bad_export_input_is_one_error_line(argv, fragments, trained):
    assert_one_error_line(run_recsys(["export", f"ckpt={trained}", *argv]), *fragments)
