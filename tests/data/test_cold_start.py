"""Cold-start evaluation: metrics by the target item's training count (cold / rare / head) and the
``data.cold_items`` protocol that holds a seeded fraction of the items out of training."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from conftest import TINY, run_recsys

from recsys_cli.builders import build_datamodule
from recsys_cli.compose import compose_train
from recsys_cli.data.datamodule import CaseBatches
from recsys_cli.data.splits import held_out_items
from recsys_cli.data.tasks import next_item_case_ends
from recsys_cli.reporting import format_table
from recsys_cli.training.buckets import BUCKET_METRICS, FREQUENCY_BUCKETS, frequency_buckets
from recsys_cli.training.metrics import RankingMetrics, sync_distributed

# 3 cases, 5 items (column 0 = padding), as in test_metrics.py: target ranks 2, 1, 4
SCORES = torch.tensor(
    [
        [100.0, 0.1, 0.9, 0.5, 0.3, 0.7],  # order 2,5,3,4,1: target 3 at rank 2
        [100.0, 0.5, 0.5, 0.5, 0.1, 0.2],  # order 1,2,3,5,4: target 2 at rank 1
        [100.0, 0.2, 0.1, 0.4, 0.3, 0.8],  # order 5,3,4,1,2: target 2 at rank 4
    ]
)
TARGETS = torch.tensor([3, 2, 2])
# training events of items 0..5: item 3 is cold, item 2 rare, the others head
COUNTS = np.array([0, 7, 4, 0, 5, 9])
BUCKETS = [name for name, _ in FREQUENCY_BUCKETS]


def random_cases(seed: int, cases: int = 41, num_items: int = 30):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(cases, num_items + 1, generator=g).round(decimals=1)  # ties included
    targets = torch.randint(1, num_items + 1, (cases,), generator=g)
    counts = torch.randint(0, 8, (num_items + 1,), generator=g).numpy()
    return scores, targets, counts


# -- metrics by bucket ------------------------------------------------------------------------


def test_bucket_boundaries():
    assert BUCKETS == ["cold", "rare", "head"]
    assert frequency_buckets(np.array([0, 0, 1, 4, 5, 100]), 5).tolist() == [0, 0, 1, 1, 2, 2]


def test_buckets_hand_computed():
    metrics = RankingMetrics([1, 3, 5], num_items=5, item_train_counts=COUNTS)
    metrics.update(SCORES, TARGETS)
    m = metrics.compute()
    expected = {
        # cold: target 3 at rank 2
        "cold/cases": 1,
        "cold/hr@1": 0.0, "cold/hr@3": 1.0, "cold/hr@5": 1.0,
        "cold/ndcg@1": 0.0, "cold/ndcg@3": 1 / math.log2(4), "cold/ndcg@5": 1 / math.log2(4),
        "cold/mrr@1": 0.0, "cold/mrr@3": 1 / 3, "cold/mrr@5": 1 / 3,
        "cold/recall@1": 0.0, "cold/recall@3": 1.0, "cold/recall@5": 1.0,
        # rare: target 2 at ranks 1 and 4
        "rare/cases": 2,
        "rare/hr@1": 0.0, "rare/hr@3": 1 / 2, "rare/hr@5": 2 / 2,
        "rare/ndcg@1": 0.0, "rare/ndcg@3": (1 / math.log2(3)) / 2,
        "rare/ndcg@5": (1 / math.log2(3) + 1 / math.log2(6)) / 2,
        "rare/mrr@1": 0.0, "rare/mrr@3": (1 / 2) / 2, "rare/mrr@5": (1 / 2 + 1 / 5) / 2,
        "rare/recall@1": 0.0, "rare/recall@3": 1 / 2, "rare/recall@5": 2 / 2,
        # head: no case -> cases 0 and no metric at all (no NaN)
        "head/cases": 0,
    }
    buckets = {k: v for k, v in m.items() if "/" in k}
    assert buckets.keys() == expected.keys()
    for key, value in expected.items():
        assert buckets[key] == pytest.approx(value, rel=1e-12), key
    assert isinstance(buckets["cold/cases"], int)
    assert not any(k.endswith(f"coverage@{k_}") for k in buckets for k_ in (1, 3, 5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_buckets_add_up_to_the_overall_metrics(seed):
    scores, targets, counts = random_cases(seed)
    plain = RankingMetrics([1, 5, 10], num_items=30)
    bucketed = RankingMetrics([1, 5, 10], num_items=30, item_train_counts=counts)
    for part in (slice(0, 17), slice(17, None)):  # two batches
        plain.update(scores[part], targets[part])
        bucketed.update(scores[part], targets[part])
    overall, m = plain.compute(), bucketed.compute()
    # the overall numbers are exactly those computed without buckets
    assert {k: v for k, v in m.items() if "/" not in k} == overall
    cases = [m[f"{b}/cases"] for b in BUCKETS]
    assert sum(cases) == bucketed.count == len(targets)
    for name in BUCKET_METRICS:
        for k in (1, 5, 10):
            weighted = sum(m.get(f"{b}/{name}@{k}", 0.0) * n for b, n in zip(BUCKETS, cases, strict=True))
            assert weighted / len(targets) == pytest.approx(overall[f"{name}@{k}"], rel=1e-12, abs=1e-15)


def test_bucket_state_merges_and_round_trips():
    scores, targets, counts = random_cases(3)
    single = RankingMetrics([5], num_items=30, item_train_counts=counts)
    single.update(scores, targets)
    a = RankingMetrics([5], num_items=30, item_train_counts=counts)
    b = RankingMetrics([5], num_items=30, item_train_counts=counts)
    a.update(scores[:20], targets[:20])
    b.update(scores[20:], targets[20:])
    a.merge(b)
    assert a.compute() == pytest.approx(single.compute())
    loaded = RankingMetrics([5], num_items=30, item_train_counts=counts)
    loaded.load_state(single.state())
    assert loaded.compute() == single.compute()
    with pytest.raises(ValueError, match="buckets"):
        a.merge(RankingMetrics([5], num_items=30))
    with pytest.raises(ValueError, match="item_train_counts"):
        RankingMetrics([5], num_items=30, item_train_counts=counts[:-1])


def test_bucket_sums_are_all_reduced_like_the_overall_ones(monkeypatch):
    """Two ranks' accumulators, reduced by sync_distributed with a stand-in for the collective
    (rank 0's view: the other rank's tensors arrive in state order), equal one accumulator over all
    cases. The real collective is exercised by test_metrics.py and the DDP test of test_cli.py."""
    import torch.distributed as dist

    scores, targets, counts = random_cases(4)
    ranks = [RankingMetrics([1, 10], num_items=30, item_train_counts=counts) for _ in range(2)]
    for r, metrics in enumerate(ranks):
        metrics.update(scores[r::2], targets[r::2])
    other = iter(ranks[1].state().values())

    def all_reduce(tensor, op):
        theirs = next(other).to(tensor.dtype)
        tensor.copy_(torch.maximum(tensor, theirs) if op == dist.ReduceOp.MAX else tensor + theirs)

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    sync_distributed(ranks[0])
    single = RankingMetrics([1, 10], num_items=30, item_train_counts=counts)
    single.update(scores, targets)
    assert "bucket_ndcg" in ranks[0].state()
    assert ranks[0].state()["bucket_count"].tolist() == single.state()["bucket_count"].tolist()
    assert ranks[0].compute() == pytest.approx(single.compute(), rel=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_buckets_on_cuda_match_cpu():
    scores, targets, counts = random_cases(5)
    cpu = RankingMetrics([1, 10], num_items=30, item_train_counts=counts)
    cpu.update(scores, targets)
    gpu = RankingMetrics([1, 10], num_items=30, item_train_counts=counts)
    gpu.update(scores.cuda(), targets.cuda())
    assert gpu.state()["bucket_hr"].device.type == "cuda"
    assert gpu.compute() == pytest.approx(cpu.compute(), rel=1e-12)


def test_table_shows_buckets_and_nothing_for_an_empty_one():
    table = format_table({
        "val": {"ndcg@10": 0.5, "cold/cases": 0, "head/cases": 3, "head/ndcg@10": 0.25},
        "test": {"ndcg@10": 0.4, "cold/cases": 2, "cold/ndcg@10": 0.125, "head/cases": 1, "head/ndcg@10": 0.5},
    })
    lines = table.splitlines()
    assert re.search(r"^cold/cases\s+0\s+2$", table, re.M)
    assert re.search(r"^cold/ndcg@10\s+-\s+0\.1250$", table, re.M)  # an empty bucket: no number
    assert "nan" not in table
    # overall rows first, each bucket together, in the order of the buckets
    order = [line.split()[0] for line in lines[1:] if line.strip() and not line.startswith("(")]
    assert order == ["ndcg@10", "cold/cases", "cold/ndcg@10", "head/cases", "head/ndcg@10"]
    assert "cold: 0, rare: 1-4, head: 5+" in lines[-1]


# -- data.cold_items --------------------------------------------------------------------------


def datamodule(cache_dir, *overrides: str):
    cfg = compose_train([*TINY, f"paths.cache_dir={cache_dir}", *overrides])
    dm = build_datamodule(cfg)
    dm.load()
    return dm


def batches(loader) -> list[dict[str, torch.Tensor]]:
    return list(loader)


def test_held_out_items_are_seeded():
    a = held_out_items(80, 0.2, seed=7)
    assert len(a) == 16 and len(set(a.tolist())) == 16 and a.min() >= 1 and a.max() <= 80
    assert a.tolist() == held_out_items(80, 0.2, seed=7).tolist()
    assert a.tolist() != held_out_items(80, 0.2, seed=8).tolist()
    assert len(held_out_items(80, 0.0, seed=7)) == 0


def test_cold_items_are_held_out_of_training(cache_dir):
    full = datamodule(cache_dir)
    dm = datamodule(cache_dir, "data.cold_items=0.2")
    held = dm.held_out
    assert len(held) == 16
    assert held.tolist() == datamodule(cache_dir, "data.cold_items=0.2").held_out.tolist()  # same seed
    assert held.tolist() != datamodule(cache_dir, "data.cold_items=0.2", "seed=1").held_out.tolist()

    # no training batch has a held-out item as an input (encoder or older history) or a target
    seen_targets = 0
    for batch in batches(dm.train_dataloader()):
        assert not np.isin(batch["items"].numpy(), held).any()
        assert not np.isin(batch["targets"].numpy(), held).any()
        seen_targets += int((batch["targets"] > 0).sum())
    items, _ = dm.train_events()
    assert not np.isin(items, held).any()
    assert seen_targets == len(items) - np.count_nonzero(np.diff(dm.train_data.offsets))  # dense: every event but each user's first
    assert dm.held_out_events == len(full.train_events()[0]) - len(items) > 0

    # the training view: each user's kept training events, in order; window features of its own
    data, view = dm.data, dm.train_data
    for u in range(data.num_users):
        own = data.items[data.offsets[u] : dm.split.train_end[u]]
        assert view.items[view.offsets[u] : view.offsets[u + 1]].tolist() == own[~np.isin(own, held)].tolist()
    assert dm.train_features.starts.shape[0] == view.num_events
    assert (dm.train_end == view.offsets[1:]).all()

    # held-out items have no training count, so every case with one as target is cold
    counts = dm.spec().item_train_counts
    assert (counts[held] == 0).all()
    assert counts.sum() == len(items)

    # validation and test cases are unchanged: the same batches as without held-out items
    for stage in ("val", "test"):
        ours, theirs = batches(getattr(dm, f"{stage}_dataloader")()), batches(getattr(full, f"{stage}_dataloader")())
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    test_targets = dm.data.items[dm.split.test_targets]
    assert (counts[test_targets] == 0).sum() > 0  # the cold bucket is not empty
    summary = dm.summary()
    assert summary["cold_items"] == {"fraction": 0.2, "items": 16, "train_events": dm.held_out_events}
    assert summary["test_cases"] == full.summary()["test_cases"]


def test_no_cold_items_leaves_training_batches_as_they_were(cache_dir):
    dm = datamodule(cache_dir, "data.cold_items=0")
    assert dm.train_data is dm.data and dm.train_features is dm.features  # no copy
    assert len(dm.held_out) == 0 and "cold_items" not in dm.summary()
    # the batches as the data module built them before training views existed
    data, split = dm.data, dm.split
    ends, starts, users = next_item_case_ends(data.offsets[:-1], split.train_end, dm.max_len, dm.train_windows)
    before = CaseBatches(data, ends, starts, dm.max_len, dm.history_len, False, dm.features, users + 1)
    ours = batches(dm.train_dataloader())
    order = np.concatenate([np.asarray(ids) for ids in dm.train_dataloader().sampler])
    assert len(order) == len(before)
    start = 0
    for batch in ours:
        expected = before[order[start : start + len(batch["items"])]]
        start += len(batch["items"])
        assert batch.keys() == expected.keys() and all(torch.equal(batch[k], expected[k]) for k in batch)
    users = data.user_of_event
    train = np.arange(data.num_events) < split.train_end[users]
    assert dm.train_events()[0].tolist() == data.items[train].tolist()


def test_train_and_evaluate_report_the_buckets(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = run_recsys(["train", *TINY, "data.cold_items=0.2", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"])
    assert result.code == 0, result.err[-3000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["data"]["cold_items"]["items"] == 16
    assert "Held out of training (data.cold_items=0.2): 16 items" in result.out
    for stage in ("val", "test"):
        values = report[stage]
        assert sum(values[f"{b}/cases"] for b in BUCKETS) == report["data"][f"{stage}_cases"]
        assert values["cold/cases"] > 0 and "cold/ndcg@10" in values and "cold/coverage@10" not in values
    test = report["test"]
    for name in ("cold/cases", "cold/ndcg@10", "head/hr@10"):
        value = test[name]
        shown = f"{value:d}" if isinstance(value, int) else f"{value:.4f}"
        assert re.search(rf"^{re.escape(name)}\s+\S+\s+{re.escape(shown)}$", result.out, re.M), name
    logged = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/ndcg@10", "val/cold/ndcg@10", "test/head/cases"} <= set(logged)

    evaluated = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}"])
    assert evaluated.code == 0, evaluated.err[-3000:]
    files = sorted((run_dir / "evaluations").glob("*.json"))
    again = json.loads(files[-1].read_text())["results"]["all scales"]
    assert again.keys() == test.keys()
    for name, value in test.items():
        assert again[name] == pytest.approx(value, abs=1e-6), name
    assert re.search(r"^cold/ndcg@10\s+\d\.\d{4}$", evaluated.out, re.M)


@pytest.mark.parametrize("value", ["1", "-0.1", "abc"])
def test_bad_cold_items_is_one_error_line(value, cache_dir, tmp_path):
    result = run_recsys(["train", *TINY, f"data.cold_items={value}", f"paths.cache_dir={cache_dir}",
                         f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.code == 2, result.err[-2000:]
    errors = [line for line in result.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "data.cold_items" in errors[0], result.err[-2000:]
    assert "Traceback" not in result.err + result.out


def test_items_held_out_of_training_are_not_candidates_of_the_training_loss():
    """In the cold-start protocol the held-out items do not exist when the model trains: the loss
    must not push their scores down as negatives."""
    import torch.nn.functional as F

    from recsys_cli.contract import DataSpec, ModelOutput, ScaleSet
    from recsys_cli.training.losses import BCEOneNegative, FullSoftmaxCE, SampledSoftmax

    torch.manual_seed(0)
    spec = DataSpec(num_items=6, num_users=1, max_len=3, scales=ScaleSet(), held_out_items=np.array([2, 5]))
    states, table = torch.randn(2, 3, 4), torch.randn(7, 4, requires_grad=True)
    targets = torch.tensor([[1, 3, 4], [6, 0, 1]])
    output, batch = ModelOutput(states=states, item_table=table), {"targets": targets}
    term = FullSoftmaxCE()
    term.bind(spec)
    value, _ = term(output, batch)
    keep = torch.tensor([1, 3, 4, 6])  # the candidates that exist in training
    sel = targets > 0
    remap = torch.full((7,), -1, dtype=torch.long)
    remap[keep] = torch.arange(len(keep))
    expected = F.cross_entropy(states[sel] @ table[keep].T, remap[targets[sel]])
    torch.testing.assert_close(value, expected)
    for sampled in (SampledSoftmax(num_negatives=50), BCEOneNegative()):
        sampled.bind(spec)
        table.grad = None
        sampled(output, batch)[0].backward()
        assert (table.grad[[2, 5]] == 0).all() and table.grad[keep].abs().sum() > 0
    unbound = FullSoftmaxCE()
    unbound.bind(DataSpec(num_items=6, num_users=1, max_len=3, scales=ScaleSet(), held_out_items=np.zeros(0, dtype=np.int64)))
    assert unbound.excluded is None
