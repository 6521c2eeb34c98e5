"""trainer.compile: torch.compile by config, in place (checkpoints keep their weight names)."""

from __future__ import annotations

import json

import pytest
from conftest import TINY, run_recsys, tiny_datamodule

from recsys_cli.builders import build_module, build_trainer
from recsys_cli.checks import validate_config


def test_compile_is_applied_in_place_and_not_given_to_the_trainer(tmp_path):
    cfg, dm = tiny_datamodule(tmp_path, "trainer.compile=true", "scales=none")
    validate_config(cfg)
    compiled = build_module(cfg, dm, {})
    cfg_plain, _ = tiny_datamodule(tmp_path, "scales=none")
    plain = build_module(cfg_plain, dm, {})
    assert compiled.model._compiled_call_impl is not None and plain.model._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(plain.state_dict())  # no _orig_mod. prefixes
    build_trainer(cfg, tmp_path, with_callbacks=False)  # pl.Trainer has no 'compile' argument


def test_a_compile_setting_that_is_not_a_switch_is_one_error_line(tmp_path):
    cfg, _ = tiny_datamodule(tmp_path, "trainer.compile=fast")
    with pytest.raises(Exception, match=r"^trainer.compile='fast': use true") as err:
        validate_config(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_a_compiled_run_trains_and_evaluates(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = run_recsys(["train", *TINY, "trainer.compile=true", "scales=none", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"])
    assert result.code == 0, result.err[-3000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= report["test"]["ndcg@10"] <= 1
    evaluated = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}"])
    assert evaluated.code == 0, evaluated.err[-3000:]
