"""Tasks: cloze masking (rates, at least one mask per case, the last-item cases, seeding), the
evaluation query slot, next item unchanged, the combinations a cloze model refuses, and a cloze
model's checkpoint evaluating to its training numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY, TINY_BASELINE, assert_one_error_line, run_recsys, tiny_datamodule

from recsys_cli.data.datamodule import CaseBatches
from recsys_cli.data.tasks import Cloze, NextItem

CLOZE = ["task=cloze", "model/encoder=bert", "scales=none"]


def _batches(cases: CaseBatches, size: int = 16):
    ids = np.arange(len(cases))
    return [(chunk, cases[chunk]) for chunk in np.array_split(ids, max(1, len(ids) // size))]


def test_cloze_masks_each_position_at_the_rate_asked_and_at_least_one_per_case():
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 51, 4000)
    lengths[:50] = 1
    valid = np.arange(50)[None, :] >= 50 - lengths[:, None]
    kinds = np.zeros(4000, dtype=np.int64)
    kinds[-500:] = Cloze.LAST_ITEM
    masked = Cloze(mask_prob=0.2).masked_positions(valid, kinds, np.random.default_rng(1))
    assert not (masked & ~valid).any()
    ordinary, last = masked[:-500], masked[-500:]
    has_events = valid[:-500].any(1)
    assert ordinary[has_events].any(1).all() and not ordinary[~has_events].any()
    assert ordinary[:50].sum(1).tolist() == [1] * 50  # a case of one event: that event
    long = valid[:-500].sum(1) >= 40  # where one forced mask hardly moves the rate
    rate = ordinary[long].sum() / valid[:-500][long].sum()
    assert 0.19 < rate < 0.21
    assert not last[:, :-1].any() and (last[:, -1] == valid[-500:, -1]).all()


def test_the_forced_mask_of_a_case_is_uniform_over_its_events():
    """A case that drew no mask gets one, at each of its valid positions about equally often."""
    valid = np.zeros((6000, 8), dtype=bool)
    valid[:, 5:] = True  # three events
    masked = Cloze(mask_prob=0.01).masked_positions(valid, np.zeros(6000, dtype=np.int64), np.random.default_rng(2))
    alone = masked.sum(1) == 1
    shares = masked[alone][:, 5:].sum(0) / alone.sum()
    assert np.all(np.abs(shares - 1 / 3) < 0.03), shares


def test_cloze_training_cases_hide_their_targets_behind_the_mask(tmp_path):
    """Every target is a masked position's own event (its item; type and category hidden), every
    other position has none; each user with two or more training events has one case with only
    its newest training event masked; the masks repeat for the same batch, and a training event is
    in some case."""
    _, dm = tiny_datamodule(tmp_path, *CLOZE)
    data, mask_item = dm.data, dm.data.num_items + 1
    assert dm.spec().mask_item == mask_item
    cases = dm.train_cases()
    kinds = cases.kinds
    users_with_two = int(((dm.train_end - data.offsets[:-1]) >= 2).sum())
    assert int((kinds == Cloze.LAST_ITEM).sum()) == users_with_two
    L = dm.max_len
    covered = np.zeros(data.num_events, dtype=bool)
    for ids, batch in _batches(cases):
        items, targets = batch["items"].numpy(), batch["targets"].numpy()
        inputs = items[:, -targets.shape[1] :]
        hidden = inputs == mask_item
        assert np.array_equal(hidden, targets > 0)
        assert hidden.any(1).all()
        ends = cases.ends[ids]
        # the true events of the last L' positions: global index ends - L' .. ends - 1
        width = targets.shape[1]
        idx = ends[:, None] + np.arange(-width, 0)[None, :]
        real = idx >= cases.starts[ids][:, None]
        truth = np.where(real, data.items[np.where(real, idx, 0)], 0)
        assert np.array_equal(targets[hidden], truth[hidden])
        assert np.array_equal(inputs[~hidden], truth[~hidden])
        assert (batch["event_types"].numpy()[:, -width:][hidden] == 0).all()
        assert (batch["categories"].numpy()[:, -width:][hidden] == 0).all()
        last = kinds[ids] == Cloze.LAST_ITEM
        assert hidden[last, -1].all() and hidden[last].sum() == last.sum()
        assert np.array_equal(targets[last, -1], data.items[ends[last] - 1])
        covered[idx[real]] = True
        again = cases[ids]
        assert torch.equal(again["items"], batch["items"]) and torch.equal(again["targets"], batch["targets"])
    train = np.arange(data.num_events) < dm.train_end[data.user_of_event]
    two = ((dm.train_end - data.offsets[:-1]) >= 2)[data.user_of_event]
    assert covered[train & two].all() and not covered[~train].any()
    assert max(len(b["targets"][0]) for _, b in _batches(cases)) <= L


def test_a_cloze_evaluation_case_appends_a_mask_slot_after_the_history(tmp_path):
    """The query: the next-item case's memory one column to the left, then [MASK] at the time of
    the newest event; targets, users and seen items unchanged."""
    _, plain = tiny_datamodule(tmp_path / "plain", "scales=none")
    _, cloze = tiny_datamodule(tmp_path / "cloze", *CLOZE)
    mask_item = cloze.data.num_items + 1
    a, b = plain.eval_cases("test"), cloze.eval_cases("test")
    ids = np.arange(len(a))
    for chunk in np.array_split(ids, 4):
        want, got = a[chunk], b[chunk]
        assert got["items"].shape == want["items"].shape
        assert (got["items"][:, -1] == mask_item).all()
        assert torch.equal(got["times"][:, -1], want["times"][:, -1])
        assert (got["event_types"][:, -1] == 0).all() and (got["categories"][:, -1] == 0).all()
        # the events before the slot, right-aligned (trimmed, a batch of short histories keeps
        # one column more than the next-item one: the slot's)
        k = min(got["items"].shape[1] - 1, want["items"].shape[1])
        for name in ("items", "times", "event_types", "categories"):
            assert torch.equal(got[name][:, :-1][:, -k:], want[name][:, -k:]), name
        assert torch.equal(got["targets"][:, -1], want["targets"][:, -1])
        assert torch.equal(got["users"], want["users"]) and torch.equal(got["seen"], want["seen"])


def test_next_item_is_the_task_by_default_and_gives_the_batches_it_gave(tmp_path):
    """The default task and a data module given none (configs saved before tasks) alike."""
    cfg, dm = tiny_datamodule(tmp_path, "scales=none")
    assert cfg.task._target_.endswith(".NextItem") and isinstance(dm.task, NextItem)
    assert not isinstance(dm.task, Cloze) and dm.spec().mask_item == 0
    cases = dm.train_cases()
    d = dm.data
    for ids, batch in _batches(cases):
        width = batch["targets"].shape[1]
        idx = cases.ends[ids][:, None] + np.arange(-width, 0)[None, :]
        real = idx >= cases.starts[ids][:, None]
        nxt = np.where(real, d.items[np.minimum(np.where(real, idx, 0) + 1, d.num_events - 1)], 0)
        assert np.array_equal(batch["targets"].numpy(), nxt)


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["task=cloze"], ["task=cloze", "scales (use scales=none)"]),
        (["task=cloze", "scales=none", "objective.behaviour.weight=0.5"], ["objective.behaviour"]),
        (["task=cloze", "scales=none", "model/latent=vae"], ["objective.recon", "objective.kl"]),
        (["task=cloze", "scales=none", "model.context_request_time=true"], ["model.context_request_time"]),
        (["task=cloze", "scales=none", "model=popularity"], ["the model MostPopular (use model=sequential)"]),
        (["model/encoder=bert", "scales=none"], ["model.encoder.causal=false", "task=cloze"]),
        (["task=cloze", "scales=none", "task.mask_prob=1.5"], ["task.mask_prob"]),
    ],
)
def test_what_a_cloze_model_cannot_combine_with_is_one_error_line(tmp_path, overrides, fragments):
    base = TINY_BASELINE if any(o.startswith("model=") for o in overrides) else TINY
    result = run_recsys(["train", *base, *overrides, f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert_one_error_line(result, *fragments)
    assert not (tmp_path / "cache").exists()  # refused before any data was prepared


def test_a_cloze_model_s_checkpoint_evaluates_to_its_training_numbers(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_recsys(["train", *TINY, *CLOZE, "model.encoder.time_bias=hstu", f"paths.cache_dir={tmp_path / 'cache'}",
                          f"hydra.run.dir={run_dir}"])  # fmt: skip
    assert trained.code == 0, trained.err[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert "model.mask_vector" in ckpt["state_dict"]
    result = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}"])
    assert result.code == 0, result.err[-3000:]
    evaluated = json.loads(sorted((run_dir / "evaluations").glob("*.json"))[-1].read_text())
    trained_test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert trained_test["ndcg@10"] > 0
    for name, value in trained_test.items():
        assert evaluated["results"]["all scales"][name] == pytest.approx(value, abs=1e-6), name
