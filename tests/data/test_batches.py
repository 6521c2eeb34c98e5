"""Length bucketing and padding trimming: the same cases, the same states, less padding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from conftest import TINY, TINY_BASELINE

from recsys_cli.builders import build_datamodule, build_module
from recsys_cli.compose import compose_train
from recsys_cli.data.batches import ShardedBatchSampler
from recsys_cli.data.datamodule import CaseBatches


def datamodule(tmp_path, *overrides: str):
    baseline = any(o.startswith("model=") and o != "model=sequential" for o in overrides)
    cfg = compose_train([
        *(TINY_BASELINE if baseline else TINY), "data.max_len=40", *overrides, f"paths.run_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
    ])  # fmt: skip
    dm = build_datamodule(cfg)
    dm.load()
    return cfg, dm


def pairs(loader) -> Counter:
    """The (user, target item, target time) of every supervised position the loader gives."""
    out: Counter = Counter()
    for batch in loader:
        users = batch["users"].unsqueeze(1).expand_as(batch["targets"])
        on = batch["targets"] > 0
        out.update(zip(users[on].tolist(), batch["targets"][on].tolist(), batch["target_times"][on].tolist(), strict=True))
    return out


@pytest.mark.parametrize("world", [1, 2])
def test_bucketing_keeps_every_epochs_cases_and_shortens_the_batches(world):
    rng = np.random.default_rng(0)
    n, size = 1000, 16
    lengths = rng.integers(1, 200, n)
    for epoch in range(2):
        plain, bucketed = [], []
        for rank in range(world):
            for out, pool in ((plain, 0), (bucketed, 8)):
                s = ShardedBatchSampler(n, size, True, seed=3, rank=rank, world=world, lengths=lengths, bucket_pool=pool)
                s.set_epoch(epoch)
                batches = list(s)
                assert len(batches) == len(s)  # the number of batches per epoch is unchanged
                out.extend(batches)
        assert sorted(np.concatenate(plain).tolist()) == sorted(np.concatenate(bucketed).tolist())
        # padding to each batch's longest case: bucketing cuts it by far
        padded = {name: sum(len(b) * lengths[b].max() for b in bs) for name, bs in (("plain", plain), ("bucketed", bucketed))}
        assert padded["bucketed"] < 0.75 * padded["plain"]
    # still shuffled: another epoch, another order of batches
    s = ShardedBatchSampler(n, size, True, seed=3, lengths=lengths, bucket_pool=8)
    first = [b.tolist() for b in s]
    s.set_epoch(1)
    assert first != [b.tolist() for b in s]


def test_evaluation_goes_by_length_and_takes_every_case_once():
    lengths = np.array([5, 1, 4, 1, 3, 9, 2])
    for world in (1, 2, 3):
        ids = [np.concatenate(list(ShardedBatchSampler(7, 2, False, 0, r, world, pad=False, lengths=lengths))) for r in range(world)]
        assert sorted(np.concatenate(ids).tolist()) == list(range(7))
        assert all((np.diff(lengths[i]) >= 0).all() for i in ids)


def test_bucketed_training_supervises_the_same_positions(tmp_path):
    """Over an epoch, data.bucket_pool changes which cases share a batch, not which (user,
    position) pairs are trained, and trimmed batches carry every target."""
    _, plain = datamodule(tmp_path / "a", "scales=session_day_month_all", "data.batch_size=16")
    _, bucketed = datamodule(tmp_path / "b", "scales=session_day_month_all", "data.batch_size=16", "data.bucket_pool=4")
    full = plain.train_cases()
    untrimmed = CaseBatches(full.data, full.ends, full.starts, full.max_len, full.history_len, False, full.features, full.users)
    everything = pairs([untrimmed[np.arange(len(full))]])
    assert pairs(plain.train_dataloader()) == everything == pairs(bucketed.train_dataloader())
    widths = [b["targets"].shape[1] for b in bucketed.train_dataloader()]
    assert min(widths) < plain.max_len  # some bucketed batches are shorter than max_len


@pytest.mark.parametrize("encoder", ["transformer", "transformer_post", "gru", "lstm"])
@pytest.mark.parametrize("scales", ["none", "session_day_month_all"])
def test_a_trimmed_batch_gives_the_same_states(tmp_path, encoder, scales):
    """Cutting the padding common to a batch changes no state of a real position: positions are
    counted from the newest event, and recurrent encoders start from zero at each first event."""
    post = ["model.encoder.norm=post", "model.encoder.activation=relu"] if encoder.endswith("_post") else []
    # max_len 100: longer than most users' histories, so evaluation cases are short too
    cfg, dm = datamodule(
        tmp_path, f"model/encoder={encoder.removesuffix('_post')}", f"scales={scales}", "data.max_len=100", *post
    )
    module = build_module(cfg, dm, {}).eval()
    for stage_cases in (dm.train_cases(), dm.eval_cases("val")):
        c = stage_cases
        ids = np.argsort(c.lengths())[:12]  # the shortest cases: a lot of common padding
        trimmed = c[ids]
        c.trim = False
        full = c[ids]
        c.trim = True
        L = trimmed["targets"].shape[1]
        assert L < dm.max_len
        with torch.no_grad():
            a = module.model(full).states[:, -L:]
            b = module.model(trimmed).states
        on = full["items"][:, -L:] > 0
        torch.testing.assert_close(a[on], b[on], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["sequential", "popularity"])
def test_evaluation_in_row_chunks_gives_the_same_metrics(tmp_path, monkeypatch, model):
    """Ranking a batch a few rows at a time (what keeps a million-item catalogue's evaluation
    small) changes no metric."""
    import recsys_cli.training.module as module_file

    cfg, dm = datamodule(tmp_path, f"model={model}", "scales=none")
    module = build_module(cfg, dm, {}).eval()
    module.log = lambda *a, **k: None

    def evaluate() -> dict:
        module._eval_start()
        with torch.no_grad():
            for batch in dm.val_dataloader():
                module._eval_step(batch)
        module._eval_end("val")
        return dict(module.results["val"])

    whole = evaluate()
    monkeypatch.setattr(module_file, "EVAL_SCORE_ELEMENTS", 3 * (dm.spec().num_items + 1))  # 3 rows
    chunked = evaluate()
    assert whole.keys() == chunked.keys() and len(whole) > 10
    for name, value in whole.items():
        assert chunked[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize(
    "overrides",
    [
        ["model/encoder=transformer", "scales=none"],
        ["model/encoder=gru", "scales=session_day_month_all"],
        ["model/encoder=transformer", "scales=session_day_month_all", "scales.pooling=mean", "model.share_encoder=false"],
        ["model/encoder=lstm", "scales=session_day_month_all", "scales.statistics=true", "model/fusion=attention",
         "model.context_request_time=true", "model.user_embedding=true", "model/latent=vae"],
    ],
)  # fmt: skip
def test_the_newest_state_alone_equals_the_newest_of_all_states(tmp_path, overrides):
    """Evaluation asks for the newest position only (last_only): the scales and the fusion then
    work for one anchor instead of L, and give the same state."""
    cfg, dm = datamodule(tmp_path, *overrides)
    module = build_module(cfg, dm, {}).eval()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        every = module.model(batch)
        newest = module.model(batch, last_only=True)
    assert newest.states.shape[1] == 1 and every.states.shape[1] == batch["targets"].shape[1]
    torch.testing.assert_close(newest.states[:, -1], every.states[:, -1], rtol=1e-5, atol=1e-5)
    for name, value in newest.aux.items():
        torch.testing.assert_close(value[:, -1], every.aux[name][:, -1], rtol=1e-5, atol=1e-5)
