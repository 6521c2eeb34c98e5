"""The switches on top of the sequence model: context features, the user embedding, the
variational latent, cosine scoring and the next-behaviour head; the batch fields they read."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from conftest import TINY, run_recsys, sequence_parts

from recsys_cli.builders import build_datamodule, build_module
from recsys_cli.compose import compose_train
from recsys_cli.contract import DataSpec, ScaleSet
from recsys_cli.contract.encoder_input import EncoderInput
from recsys_cli.errors import ConfigError
from recsys_cli.models.encoders import RNNEncoder
from recsys_cli.models.fusion import GateFusion
from recsys_cli.models.items import IdEmbedding
from recsys_cli.models.parts.context import GAP_BUCKETS, gap_bucket, time_features
from recsys_cli.models.recommender import SequenceRecommender
from recsys_cli.training.behaviour import BehaviourTerm


def setup(cache_dir, *overrides: str):
    cfg = compose_train([*TINY, f"paths.cache_dir={cache_dir}", *overrides])
    dm = build_datamodule(cfg)
    dm.load()
    return cfg, dm


def test_training_batches_carry_the_type_time_and_user_of_every_target(cache_dir):
    _, dm = setup(cache_dir, "scales=none")
    data = dm.data
    batch = next(iter(dm.train_dataloader()))
    targets, types, times = batch["targets"], batch["target_types"], batch["target_times"]
    assert types.shape == times.shape == targets.shape
    assert ((types > 0) == (targets > 0)).all() and ((times > 0) == (targets > 0)).all()
    # the target after position i is the memory event after it: same item, type and time
    items, event_types, event_times = batch["items"][:, -dm.max_len :], batch["event_types"], batch["times"]
    L = dm.max_len
    sel = targets[:, :-1] > 0
    assert torch.equal(targets[:, :-1][sel], items[:, 1:][sel])
    assert torch.equal(types[:, :-1][sel], event_types[:, -L:][:, 1:][sel])
    assert torch.equal(times[:, :-1][sel], event_times[:, -L:][:, 1:][sel])
    # users: index + 1, the user whose events these are
    users = batch["users"] - 1
    first = batch["items"][:, -1]
    assert (users >= 0).all()
    for b in range(4):
        u = int(users[b])
        assert int(first[b]) in data.items[data.offsets[u] : data.offsets[u + 1]].tolist()


def test_evaluation_batches_carry_the_held_out_events_type_and_time(cache_dir):
    _, dm = setup(cache_dir, "scales=none")
    data, targets = dm.data, dm.split.test_targets
    loader = dm.test_dataloader()
    batch, first = next(iter(loader)), targets[next(iter(loader.sampler))]
    assert batch["target_types"][:, -1].tolist() == data.event_types[first].tolist()
    assert batch["target_times"][:, -1].tolist() == data.times[first].tolist()
    assert (batch["target_types"][:, :-1] == 0).all() and (batch["target_times"][:, :-1] == 0).all()
    assert (batch["users"] - 1).tolist() == data.user_of_event[first].tolist()


def test_users_without_training_targets_are_unknown_and_counted(cache_dir):
    _, dm = setup(cache_dir, "scales=none", "data/split=temporal")
    known = dm.known_users()
    data = dm.data
    users = data.user_of_event[dm.split.test_targets]
    expected = int((~known[users]).sum())
    assert expected > 0  # a temporal split has users whose events all come after the cutoff
    assert dm.summary()["unknown_users"]["test"] == expected
    loader = dm.test_dataloader()
    fields = torch.cat([b["users"] for b in loader])
    order = np.concatenate(list(loader.sampler))  # the case of every row (evaluation goes by length)
    assert int((fields == 0).sum()) == expected
    assert ((fields == 0) == torch.from_numpy(~known[users[order]])).all()


def test_time_features_by_hand():
    # 2023-11-14 22:13:20 UTC is a Tuesday; 3,601 s later it is 23:13:21
    t = torch.tensor([1_700_000_000, 1_700_003_601])
    f = time_features(t, torch.tensor([0, 1_700_000_000]), torch.tensor([False, True]))
    assert f["hour"].tolist() == [23, 24]  # 1 + hour of day
    assert f["weekday"].tolist() == [2, 2]  # 1 = Monday
    assert f["gap"].tolist() == [GAP_BUCKETS - 1, 1 + math.floor(math.log2(3602))]
    assert gap_bucket(torch.tensor([0, 1, 2, 3, 4, 10**15])).tolist() == [1, 2, 2, 3, 3, GAP_BUCKETS - 2]


SWITCHES = {
    "context": ["model.context=[hour,weekday,gap,event_type,category]"],
    "request_time": ["model.context=[gap]", "model.context_request_time=true"],
    "user_embedding": ["model.user_embedding=true"],
    "latent": ["model/latent=vae"],
    "cosine": ["model/scoring=cosine"],
    "behaviour": ["objective.behaviour.weight=0.5"],
}


@pytest.mark.parametrize("encoder", ["gru", "lstm", "transformer"])
@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_every_switch_trains_on_every_encoder(cache_dir, encoder, switch):
    cfg, dm = setup(cache_dir, f"model/encoder={encoder}", "scales=session_all", *SWITCHES[switch])
    module = build_module(cfg, dm, {})
    optimizer = module.configure_optimizers()
    for _, batch in zip(range(3), dm.train_dataloader(), strict=False):
        step = module.training_loss(batch)
        assert torch.isfinite(step.loss) and all(torch.isfinite(v) for v in step.terms.values())
        optimizer.zero_grad()
        step.loss.backward()
        optimizer.step()
    if switch == "latent":
        assert set(step.terms) >= {"recon", "kl", "kl_raw", "beta"}
    if switch == "behaviour":
        assert "behaviour" in step.terms and step.output.aux["behaviour_logits"].shape[-1] == 3


def test_the_unknown_user_vector_is_learned_and_used_for_unknown_users(cache_dir):
    cfg, dm = setup(cache_dir, "scales=none", "model.user_embedding=true", "model.user_dropout=0.5")
    module = build_module(cfg, dm, {})
    model = module.model
    unknown = model.state["user"].embedding.weight[0].detach().clone()
    optimizer = module.configure_optimizers()
    batch = next(iter(dm.train_dataloader()))
    module.training_loss(batch).loss.backward()
    optimizer.step()
    assert not torch.equal(model.state["user"].embedding.weight[0], unknown)  # user dropout trains it
    model.eval()
    batch = next(iter(dm.test_dataloader()))
    as_unknown = dict(batch, users=torch.zeros_like(batch["users"]))
    other = dict(batch, users=torch.where(batch["users"] > 0, 0, batch["users"]))
    with torch.no_grad():
        a, b = model(as_unknown).last_scores(), model(other).last_scores()
        c = model(batch).last_scores()
    torch.testing.assert_close(a, b)  # every unknown user gets the same vector
    assert not torch.allclose(a, c)  # known users get their own


def test_cosine_scores_are_bounded_by_the_temperature(cache_dir):
    cfg, dm = setup(
        cache_dir, "scales=none", "model/scoring=cosine", "model.scoring.temperature=0.2",
        "model.scoring.learn_temperature=false",
    )  # fmt: skip
    module = build_module(cfg, dm, {})
    module.model.eval()
    with torch.no_grad():
        scores = module.model(next(iter(dm.test_dataloader()))).last_scores()[:, 1:]
    assert scores.abs().max() <= 1 / 0.2 + 1e-4 and scores.abs().max() > 0.5
    assert not any(p.requires_grad and p.dim() == 0 for p in module.model.parameters())  # fixed


def test_evaluation_reports_the_behaviour_head_next_to_its_baselines(cache_dir, tmp_path):
    cfg, dm = setup(cache_dir, "scales=none", "objective.behaviour.weight=1.0")
    module = build_module(cfg, dm, {})
    module.model.eval()
    module._eval_start()
    for batch in dm.val_dataloader():
        with torch.no_grad():
            module._eval_step(batch)
    module.log = lambda *a, **k: None  # outside a trainer
    module._eval_end("val")
    values = module.results["val"]
    names = dm.spec().event_types
    for prefix in ("behaviour", "behaviour/majority", "behaviour/markov"):
        assert 0 <= values[f"{prefix}/accuracy"] <= 1 and 0 <= values[f"{prefix}/macro_f1"] <= 1
        assert any(f"{prefix}/auc/{name}" in values for name in names)
    assert values["behaviour/cases"] == int((dm.data.event_types[dm.split.val_targets] > 0).sum())
    # the majority baseline predicts the most frequent next type of the training events
    transitions = dm.spec().type_transitions
    majority = int(np.argmax(transitions[:, 1:].sum(0)))
    types = dm.data.event_types[dm.split.val_targets]
    assert values["behaviour/majority/accuracy"] == pytest.approx(float(np.mean(types[types > 0] == majority + 1)))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.context=[device]"], r"model.context: unknown feature\(s\) 'device'"),
        (["model.scoring=euclid"], r"model.scoring"),
        (["+objective.kl._target_=recsys_cli.training.latent_terms.KLTerm", "+objective.kl.weight=1"], r"objective.kl needs"),
    ],
)
def test_bad_combinations_are_one_error_line(cache_dir, overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        cfg, dm = setup(cache_dir, "scales=none", *overrides)
        build_module(cfg, dm, {})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("types", [(), ("view",)])
def test_a_behaviour_head_without_event_types_is_one_error_line(types):
    spec = DataSpec(num_items=5, num_users=2, max_len=4, scales=ScaleSet(), event_types=types)
    term = BehaviourTerm(weight=0.5)
    with pytest.raises(ConfigError, match=rf"objective.behaviour: the data has {len(types)} event type") as err:
        term.bind(spec)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=rf"objective.behaviour: the data has {len(types)} event type"):
        SequenceRecommender(
            spec=spec, dim=8, encoder=lambda: RNNEncoder(8), fusion=GateFusion, item=IdEmbedding,
            outputs=["behaviour_logits"], **sequence_parts(),
        )  # fmt: skip


@pytest.mark.parametrize(
    ("context", "has_time", "message"),
    [
        (["category"], True, r"use_categories=true, but the data has no item categories"),
        (["event_type"], True, r"model.context has event_type, but the data has no event types"),
        (["hour", "gap"], False, r"model.context: hour, gap need event times"),
    ],
)
def test_a_context_column_the_data_lacks_is_one_error_line(context, has_time, message):
    spec = DataSpec(num_items=5, num_users=2, max_len=4, scales=ScaleSet(), has_time=has_time)
    with pytest.raises(ConfigError, match=message) as err:
        SequenceRecommender(
            spec=spec, dim=8, encoder=lambda: RNNEncoder(8), fusion=GateFusion, item=IdEmbedding,
            **sequence_parts(f"model.context=[{','.join(context)}]"),
        )  # fmt: skip
    assert "\n" not in str(err.value)


def test_a_run_with_every_switch_evaluates_again_to_the_same_numbers(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    switches = [
        "objective.behaviour.weight=0.5", "model.context=[hour,weekday,gap]", "model.user_embedding=true",
        "model/latent=vae", "model/scoring=cosine", "data/split=temporal", "scales=session_all",
    ]  # fmt: skip
    result = run_recsys(["train", *TINY, *switches, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"])
    assert result.code == 0, result.err[-3000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    unknown = report["data"]["unknown_users"]
    assert f"Users unknown to training (scored with the unknown-user vector): {unknown['val']:,} validation" in result.out
    test = report["test"]
    assert {"behaviour/accuracy", "behaviour/macro_f1", "behaviour/markov/accuracy"} <= set(test)
    assert re.search(r"^behaviour/accuracy\s+\d\.\d{4}\s+\d\.\d{4}$", result.out, re.M)
    logged = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/kl", "train/kl_raw", "train/beta", "train/recon", "train/behaviour"} <= set(logged)
    evaluated = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}"])
    assert evaluated.code == 0, evaluated.err[-3000:]
    files = sorted((run_dir / "evaluations").glob("*.json"))
    again = json.loads(files[-1].read_text())["results"]["all scales"]
    assert again.keys() == test.keys()
    for name, value in test.items():
        assert again[name] == pytest.approx(value, abs=1e-6), name


def _side_feature_model(types: tuple[str, ...], dim: int, init_std: float | None) -> SequenceRecommender:
    spec = DataSpec(
        num_items=500, num_users=2, max_len=4, scales=ScaleSet(), event_types=types,
        categories=tuple(f"c{i}" for i in range(300)),
    )
    model = SequenceRecommender(
        spec=spec, dim=dim, encoder=lambda: RNNEncoder(dim), fusion=GateFusion,
        item=lambda spec, dim: IdEmbedding(spec, dim, init_std=init_std),
        **sequence_parts("model.use_categories=true", f"model.init_std={'null' if init_std is None else init_std}"),
    )  # fmt: skip
    return model


def _side_tables(model: SequenceRecommender) -> tuple:
    """The event-type and category tables of the side-feature parts (None: no table)."""
    return model.inputs["event_types"].table, model.inputs["categories"].table


@pytest.mark.parametrize("types", [("view",), ("view", "cart", "buy")])
def test_side_features_start_small_next_to_the_item_inputs(types):
    """Event-type and category vectors start at 1/sqrt(D) of an item input (std D^-0.5 against the
    items' sqrt(D)-scaled unit variance); one event type gets no table (it would add a constant).
    (The initialisation before 2026-12-06, ``model.init_std=null``; the default: the test below.)"""
    dim = 64
    model = _side_feature_model(types, dim, init_std=None)
    type_embedding, category_embedding = _side_tables(model)
    assert (type_embedding is None) == (len(types) == 1)
    tables = [category_embedding] + ([type_embedding] if type_embedding is not None else [])
    for table in tables:
        assert torch.all(table.weight[0] == 0)
    items = torch.arange(1, 501).unsqueeze(0)
    batch = {"items": items, "event_types": torch.ones_like(items), "categories": torch.zeros_like(items)}
    item_inputs = model.embed(batch, model.items())
    assert 0.9 < float(item_inputs.std()) < 1.1
    categories = category_embedding.weight[1:]
    assert 0.8 * dim**-0.5 < float(categories.std()) < 1.2 * dim**-0.5


@pytest.mark.parametrize("types", [("view",), ("view", "cart", "buy")])
def test_side_features_keep_their_share_of_the_item_inputs_at_the_default_init(types):
    """With ``model.init_std=0.02`` (the default) every table starts at std 0.02: an item input at
    0.02 sqrt(D), a side feature 1/sqrt(D) of it, as with the unit-norm scheme above."""
    dim, std = 64, 0.02
    model = _side_feature_model(types, dim, init_std=std)
    type_embedding, category_embedding = _side_tables(model)
    assert (type_embedding is None) == (len(types) == 1)
    items = torch.arange(1, 501).unsqueeze(0)
    batch = {"items": items, "event_types": torch.ones_like(items), "categories": torch.zeros_like(items)}
    item_inputs = model.embed(batch, model.items())
    assert 0.9 * std * dim**0.5 < float(item_inputs.std()) < 1.1 * std * dim**0.5
    for table in [category_embedding] + ([type_embedding] if type_embedding is not None else []):
        assert torch.all(table.weight[0] == 0)
        assert 0.8 * std < float(table.weight[1:].std()) < 1.2 * std


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_one_layer_recurrent_encoder_does_not_drop_its_inputs_again(cell):
    """The recommender drops the inputs once; the encoder must not drop them a second time."""
    encoder = RNNEncoder(8, dropout=0.5, cell=cell).train()
    x, mask = torch.randn(3, 5, 8), torch.ones(3, 5, dtype=torch.bool)
    torch.testing.assert_close(encoder(EncoderInput(x, mask)), encoder(EncoderInput(x, mask)))
