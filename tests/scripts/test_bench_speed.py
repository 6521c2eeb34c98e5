"""scripts/bench_speed.py in tiny mode: the JSON it writes has every measurement, for both
contenders, on the same training cases (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest
from conftest import REPO

SCRIPT = REPO / "scripts" / "bench_speed.py"


def load_bench():
    """The script as a module (registered in sys.modules: its dataclasses look their module up)."""
    name = "recsys_bench_speed_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_speed")
    out = tmp / "out" / "tiny.json"
    argv = [
        "--preset", "tiny", "--contenders", "reference,transformer", "--threads", "1",
        "--out", str(out), "--cache-dir", str(tmp / "cache"), "--levels", "0.01,0.5",
    ]  # fmt: skip
    returned = load_bench().main(argv)
    return out, returned


def test_tiny_run_writes_every_measurement(tiny_run):
    out, returned = tiny_run
    assert out.is_file()
    assert not list(out.parent.glob("*.tmp")), "the atomic write left a temp file behind"
    payload = json.loads(out.read_text())
    assert payload["complete"] is True
    assert payload == json.loads(json.dumps(returned, default=str))
    epochs = payload["config"]["epochs"]
    assert epochs == 1
    assert payload["machine"]["matmul_gflops"] > 0
    assert payload["machine"]["matmul_before"]["gflops_best"] > 0
    assert len(payload["machine"]["load_average_before"]) == len(payload["machine"]["load_average_after"]) == 3
    assert 0 <= payload["data"]["padding_share"] <= 1
    assert payload["data"]["users"] > 0 and payload["data"]["items"] > 0

    contenders = payload["contenders"]
    assert set(contenders) == {"reference", "transformer"}
    for name, res in contenders.items():
        s = res["summary"]
        assert s["train_positions_per_s"] > 0, name
        assert s["seconds_per_epoch"] > 0, name
        assert s["eval_users_per_s"] > 0, name
        assert s["train_gflops_per_s"] > 0 and s["train_peak_fraction"] > 0, name
        assert len(s["ndcg@10"]) == epochs, name
        assert all(0 <= v <= 1 for v in s["ndcg@10"]), name
        assert 0 <= s["padding_share"] <= 1 and 0 <= s["no_target_share"] <= 1, name
        assert set(s["time_to_level"]) == {"0.01", "0.5"}, name
        assert s["memory_mb"] > 0 and res["memory"]["persistent_mb"] > 0, name
        assert s["ratios"]["throughput"] > 0, name
        assert (
            len(res["epochs"]) == epochs
            and res["epochs"][0]["steps"] == payload["config"]["steps_per_epoch"]
        )
    # the same training cases: the same supervised positions per epoch, the same padding
    ref, product = contenders["reference"]["summary"], contenders["transformer"]["summary"]
    assert ref["positions_per_epoch"] == product["positions_per_epoch"]
    assert all(n > 0 for n in ref["positions_per_epoch"])
    assert ref["padding_share"] == product["padding_share"]
    assert math.isclose(ref["ratios"]["throughput"], 1.0)
    # the same evaluation cases
    assert (
        contenders["reference"]["epochs"][0]["eval_users"]
        == contenders["transformer"]["epochs"][0]["eval_users"]
        > 0
    )


def test_tiny_run_prints_a_table_with_ratios(tmp_path, capsys):
    bench = load_bench()
    out = tmp_path / "t.json"
    bench.main([
        "--preset", "tiny", "--contenders", "reference,gru", "--threads", "1", "--max-steps", "1",
        "--eval-batches", "1", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    text = capsys.readouterr().out
    assert "| contender | pos/s | x base | s/epoch | x base | ms/step | x base |" in text
    assert "| reference |" in text and "| gru |" in text
    assert json.loads(out.read_text())["contenders"]["gru"]["summary"]["positions_per_epoch"][0] > 0


def test_time_switches_and_bert_train_beside_the_plain_transformer(tmp_path):
    """Contenders with time inside attention read the same batches as the plain Transformer;
    BERT4Rec reads its cloze batches; the ratios divide by the first contender."""
    bench = load_bench()
    out = tmp_path / "t.json"
    payload = bench.main([
        "--preset", "tiny", "--contenders", "transformer,transformer+hstu,transformer+windows,bert",
        "--threads", "1", "--max-steps", "2", "--eval-batches", "1", "--out", str(out),
        "--cache-dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    assert payload["config"]["baseline"] == "transformer"
    res = payload["contenders"]
    assert "model.encoder.time_bias=hstu" in res["transformer+hstu"]["overrides"]
    assert "model.encoder.head_windows=[30m,1d,30d,null]" in res["transformer+windows"]["overrides"]
    assert "task=cloze" in res["bert"]["overrides"] and "model/encoder=bert" in res["bert"]["overrides"]
    plain = res["transformer"]["summary"]
    assert res["transformer+hstu"]["summary"]["positions_per_epoch"] == plain["positions_per_epoch"]
    # the cloze task supervises the masked positions only
    assert res["bert"]["summary"]["positions_per_epoch"] != plain["positions_per_epoch"]
    assert math.isclose(plain["ratios"]["seconds_per_step"], 1.0)
    assert all(r["summary"]["seconds_per_step"] > 0 for r in res.values())
    # the extra parameters of the switches exist
    assert res["transformer+hstu"]["parameters"] > res["transformer"]["parameters"]


@pytest.mark.parametrize("name", ["gru+hstu", "transformer+hstu+tisasrec", "transformer+nope", "transformer+hstu+hstu"])
def test_contender_names_that_cannot_be_built_are_refused(name):
    load_bench()
    with pytest.raises(SystemExit, match="contender"):
        sys.modules["speedbench.contenders"].parse_contender(name)


def test_contender_names_become_overrides():
    load_bench()
    parse = sys.modules["speedbench.contenders"].parse_contender
    spec = parse("transformer+scales+heads4+windows")
    assert spec.scales == "session_day_month_all" and spec.task == "next_item"
    assert spec.switches == ("model.encoder.num_heads=4", "model.encoder.head_windows=[30m,1d,30d,null]")
    assert parse("bert").dm_key == "none/cloze" and parse("gru+scales").dm_key == "session_day_month_all"


def test_flop_formulas():
    bench = load_bench()
    D, N, L, B, M = 8, 100, 5, 2, 7
    ref = bench.FlopModel("transformer", D, 2, D, N, "all_positions")
    per_layer = 8 * D * D + 4 * D * D + 4 * L * D
    assert ref.per_position(L) == 2 * per_layer
    assert ref.train_step(B, L, M) == 3 * (B * L * 2 * per_layer + 2 * B * L * D * N)
    assert ref.eval_batch(B, L) == B * L * 2 * per_layer + 2 * B * D * N
    full = bench.FlopModel("gru", D, 1, D, N, "full_ce")
    assert full.train_step(B, L, M) == 3 * (B * L * 12 * D * D + 2 * M * D * N)
    sampled = bench.FlopModel("lstm", D, 1, D, N, "sampled_softmax", negatives=9)
    assert sampled.train_step(B, L, M) == 3 * (B * L * 16 * D * D + 2 * M * D * 10)


def test_reference_that_does_not_fit_is_skipped_with_its_reason(tmp_path, monkeypatch, capsys):
    bench = load_bench()  # the harness package (scripts/speedbench) checks the memory in its contenders
    monkeypatch.setattr(sys.modules["speedbench.contenders"], "available_memory", lambda device: 0)
    out = tmp_path / "skip.json"
    bench.main([
        "--preset", "tiny", "--contenders", "reference,transformer", "--threads", "1", "--max-steps", "1",
        "--eval-batches", "1", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    payload = json.loads(out.read_text())
    assert "full cross-entropy needs about" in payload["contenders"]["reference"]["skipped"]
    assert payload["contenders"]["transformer"]["summary"]["ratios"] is None
    text = capsys.readouterr().out
    assert "reference skipped:" in text and "| reference | skipped:" in text


def test_the_ranking_benchmark_runs_on_a_small_catalogue():
    import subprocess
    import sys

    script = REPO / "scripts" / "bench_ranking.py"
    out = subprocess.run(
        [sys.executable, str(script), "--items", "500", "--rows", "7", "--batches", "2"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "ms per user; coverage@20" in out
    assert 0 < float(out.split()[-1]) <= 1


def test_reference_initialisations():
    """SASRec+'s N(0, 0.02) tables, or the unit-norm items and N(0, 1) positions of the plateau."""
    load_bench()
    reference = sys.modules["speedbench.reference"]
    import torch

    torch.manual_seed(0)
    small = reference.ReferenceSASRec(500, 200, 64, 2, 1, 0.1)
    old = reference.ReferenceSASRec(500, 200, 64, 2, 1, 0.1, init="unit_norm")
    assert abs(small.item.weight[1:].std().item() - 0.02) < 0.002
    assert abs(small.position.weight.std().item() - 0.02) < 0.002
    assert abs(old.item.weight[1:].norm(dim=1).mean().item() - 1.0) < 0.05
    assert abs(old.position.weight.std().item() - 1.0) < 0.05
    assert old.item.weight[0].abs().sum() == 0
    # the blocks start alike: only the tables differ
    assert abs(old.blocks[0].ffn[0].weight.std().item() - 0.02) < 0.002
    with pytest.raises(ValueError, match="init="):
        reference.ReferenceSASRec(10, 5, 8, 1, 1, 0.0, init="xavier")
