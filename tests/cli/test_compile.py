"""trainer.compile: torch.compile by config, in place (checkpoints keep their weight names), on CPU
for every encoder with and without scales, including the Transformer's length groups (torch
2.13+cpu failed on them: "InductorError: Exponent must be non-negative", see docs/reliability.md)."""

from __future__ import annotations

import json

import pytest
import torch
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


def test_a_compiled_training_step_runs_on_cpu(tmp_path):
    """One training step (forward, backward) and one evaluation step under inference_mode (as
    Lightning evaluates) of the compiled model; without dropout it computes the eager loss."""
    cfg, dm = tiny_datamodule(tmp_path, "trainer.compile=true", "scales=none", "model/encoder=gru")
    module = build_module(cfg, dm, {})
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module.train()
    step = module.training_loss(batch)
    step.loss.backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    module.eval()
    with torch.no_grad():
        compiled = module.training_loss(batch).loss
        eager = module.objective(module.model.forward(batch), batch)[0]  # forward itself: not compiled
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        scores = module.model(next(iter(dm.val_dataloader())), None, last_only=True).last_scores()
    assert torch.isfinite(scores[:, 1:]).all()


@pytest.mark.slow  # a minute or more on 2 cores: the attention graph compiles for training and evaluation
def test_the_transformers_length_groups_compile(tmp_path):
    """Rows of different lengths make the encoder split the batch into groups (the path torch
    2.13+cpu could not compile): compiled, in training (attention dropout) and under
    inference_mode, it gives the eager states."""
    from recsys_cli.contract.encoder_input import EncoderInput
    from recsys_cli.models.encoders import TransformerEncoder

    torch.manual_seed(0)
    encoder = TransformerEncoder(16, 20, num_layers=1, dropout=0.1, norm="post", activation="relu", length_groups=4)
    lengths = torch.randint(1, 21, (64,), generator=torch.Generator().manual_seed(1))
    mask = torch.arange(20)[None, :] >= (20 - lengths)[:, None]
    x = torch.randn(64, 20, 16, requires_grad=True)
    compiled = torch.compile(encoder, dynamic=True)
    compiled(EncoderInput(x, mask)).sum().backward()
    assert torch.isfinite(x.grad).all()
    encoder.eval()
    with torch.inference_mode():
        torch.testing.assert_close(compiled(EncoderInput(x, mask)), encoder(EncoderInput(x, mask)), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # minutes on 2 cores per case: every graph compiles on the first steps
@pytest.mark.parametrize("encoder", ["gru", "lstm", "transformer"])
@pytest.mark.parametrize("scales", ["none", "session_day_month_all"])
def test_a_compiled_run_trains_and_evaluates(tmp_path, cache_dir, encoder, scales):
    run_dir = tmp_path / "run"
    result = run_recsys(["train", *TINY, "trainer.compile=true", f"model/encoder={encoder}", f"scales={scales}",
                         f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"])  # fmt: skip
    assert result.code == 0, result.err[-3000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= report["test"]["ndcg@10"] <= 1
    evaluated = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}"])
    assert evaluated.code == 0, evaluated.err[-3000:]
