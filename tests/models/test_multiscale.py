"""Multi-scale models: leak-free by construction, causal for dense training, every fusion trains.

The leakage property runs the whole path a prediction takes (per-event window features, batch
gathering, embeddings, encoder, scales, fusion, scores): changing every event from the target on,
the target's time included, must not change the scores of the target.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TINY, run_recsys, sequence_parts
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from recsys_cli.builders import build_datamodule, build_module
from recsys_cli.compose import compose_train
from recsys_cli.contract import DataSpec, ScaleSet
from recsys_cli.contract.scales import history_len, parse_scales
from recsys_cli.data.datamodule import CaseBatches
from recsys_cli.data.prepared_data import PreparedData
from recsys_cli.data.window_features import BASE_FEATURES, compute_window_features
from recsys_cli.errors import ConfigError
from recsys_cli.models.encoders import RNNEncoder, TransformerEncoder
from recsys_cli.models.fusion import AttentionFusion, ConcatFusion, GateFusion, WeightedFusion
from recsys_cli.models.items import IdEmbedding
from recsys_cli.models.recommender import SequenceRecommender

NUM_ITEMS, NUM_TYPES, NUM_CATS = 12, 3, 4
MAX_LEN, DIM = 5, 8
SCALES = {
    "pooling": "attention",
    "statistics": True,
    "max_events": 9,
    "windows": [
        {"name": "session", "window": "30m", "max_events": 4},
        {"name": "day", "window": "1d"},
        {"name": "last3", "window": {"last": 3}},
        {"name": "all", "window": None},
    ],
}
ENCODERS = {
    "gru": lambda: RNNEncoder(DIM, cell="gru", dropout=0.0),
    "lstm": lambda: RNNEncoder(DIM, cell="lstm", dropout=0.0),
    "transformer": lambda: TransformerEncoder(
        DIM, MAX_LEN, num_layers=2, num_heads=2, dropout=0.0, norm="pre", activation="gelu"
    ),
    "transformer_post": lambda: TransformerEncoder(
        DIM, MAX_LEN, num_layers=2, num_heads=2, dropout=0.0, norm="post", activation="relu"
    ),
}


def make_spec(scales: dict = SCALES, num_categories: int = NUM_CATS) -> DataSpec:
    types = tuple(f"t{k}" for k in range(1, NUM_TYPES + 1))
    return DataSpec(
        num_items=NUM_ITEMS,
        num_users=1,
        max_len=MAX_LEN,
        scales=ScaleSet.from_config(scales),
        event_types=types,
        categories=tuple(f"c{k}" for k in range(1, num_categories + 1)),
        stat_names=(*BASE_FEATURES, *(f"type_{t}" for t in types)),
    )


# every input switch of the sequence model on (the request's time stays off: it is the leak
# that context_request_time=true allows on purpose)
ALL_SWITCHES = {
    "switches": (
        "model.context=[hour,weekday,gap,event_type,category]", "model.user_embedding=true",
        "model/latent=vae", "model/scoring=cosine",
    ),
    "outputs": ["behaviour_logits", "latent_mu", "latent_logvar"],
}  # fmt: skip


def make_model(
    encoder: str,
    fusion=GateFusion,
    scales: dict = SCALES,
    share_encoder: bool = True,
    use_categories: bool = True,
    switches: tuple[str, ...] = (),
    outputs: tuple[str, ...] = (),
):
    """A tiny model with the parts the config builds for ``switches`` (overrides); categories are
    inputs by default so the leakage tests cover them too."""
    torch.manual_seed(0)
    model = SequenceRecommender(
        spec=make_spec(scales),
        dim=DIM,
        encoder=ENCODERS[encoder],
        fusion=lambda **kw: fusion(dropout=0.0, **kw),
        item=IdEmbedding,
        share_encoder=share_encoder,
        dropout=0.0,
        outputs=outputs,
        **sequence_parts(f"model.use_categories={str(use_categories).lower()}", *switches),
    )
    return model.eval()


def one_user(items, types, cats, gaps) -> PreparedData:
    times = 1_700_000_000 + np.cumsum(np.asarray(gaps, dtype=np.int64))
    n = len(items)
    return PreparedData(
        offsets=np.array([0, n], dtype=np.int64),
        items=np.asarray(items, dtype=np.int64),
        times=times,
        event_types=np.asarray(types, dtype=np.int64),
        categories=np.asarray(cats, dtype=np.int64),
        item_vocab=list(range(1, NUM_ITEMS + 1)),
        user_vocab=[0],
        event_type_vocab=[f"t{k}" for k in range(1, NUM_TYPES + 1)],
        category_vocab=[f"c{k}" for k in range(1, NUM_CATS + 1)],
        has_time=True,
    )


def scores_for_target(model, data: PreparedData, target: int) -> torch.Tensor:
    """[N + 1] scores of the evaluation case whose target is event ``target``."""
    scales = parse_scales(SCALES["windows"], SCALES["max_events"])
    features = compute_window_features(data, scales)
    cases = CaseBatches(
        data, np.array([target]), np.array([0]), MAX_LEN, history_len(scales, MAX_LEN), True, features
    )
    with torch.no_grad():
        return model(cases[[0]]).last_scores()[0]


GAPS = st.sampled_from([0, 30, 600, 1799, 1800, 1801, 7200, 86_400, 86_401, 5 * 86_400])


@st.composite
def histories(draw):
    n = draw(st.integers(3, 16))
    target = draw(st.integers(1, n - 1))
    event = st.tuples(st.integers(1, NUM_ITEMS), st.integers(1, NUM_TYPES), st.integers(1, NUM_CATS), GAPS)
    before = draw(st.lists(event, min_size=n, max_size=n))
    after = draw(st.lists(event, min_size=n - target, max_size=n - target))
    return before, after, target


@pytest.mark.parametrize("switches", ["plain", "all"])
@pytest.mark.parametrize("encoder", sorted(ENCODERS))
@settings(max_examples=25, deadline=None)
@given(case=histories())
def test_scores_ignore_the_target_and_everything_after_it(encoder, switches, case):
    before, after, target = case
    model = make_model(encoder, **(ALL_SWITCHES if switches == "all" else {}))
    original = one_user(*zip(*before, strict=True))
    changed = one_user(*zip(*(before[:target] + after), strict=True))  # new target time too
    assert np.array_equal(original.times[:target], changed.times[:target])
    torch.testing.assert_close(
        scores_for_target(model, original, target), scores_for_target(model, changed, target)
    )


def test_the_request_time_is_an_input_only_when_asked_for():
    events = [(3, 1, 1, 0), (5, 2, 2, 60), (7, 1, 3, 120), (2, 1, 1, 5000)]
    later = events[:3] + [(2, 1, 1, 900_000)]  # the same target, 10 days later
    a, b = one_user(*zip(*events, strict=True)), one_user(*zip(*later, strict=True))
    default = make_model("gru", switches=("model.context=[hour,weekday,gap]",))
    torch.testing.assert_close(scores_for_target(default, a, 3), scores_for_target(default, b, 3))
    asked = make_model("gru", switches=("model.context=[hour,weekday,gap]", "model.context_request_time=true"))
    assert not torch.allclose(scores_for_target(asked, a, 3), scores_for_target(asked, b, 3))


def test_categories_are_inputs_only_when_asked_for():
    events = [(3, 1, 1, 0), (5, 2, 2, 60), (7, 1, 3, 120), (2, 1, 1, 5000)]
    # other category labels, same pattern (window statistics count distinct categories)
    recategorised = [(i, t, c % NUM_CATS + 1, g) for i, t, c, g in events]
    with_cats, without = make_model("gru"), make_model("gru", use_categories=False)
    a, b = one_user(*zip(*events, strict=True)), one_user(*zip(*recategorised, strict=True))
    assert not torch.allclose(scores_for_target(with_cats, a, 3), scores_for_target(with_cats, b, 3))
    torch.testing.assert_close(scores_for_target(without, a, 3), scores_for_target(without, b, 3))
    with pytest.raises(ConfigError, match=r"model.use_categories=true, but the data has no item categories"):
        SequenceRecommender(
            spec=make_spec(num_categories=0),
            dim=DIM,
            encoder=ENCODERS["gru"],
            fusion=GateFusion,
            item=IdEmbedding,
            **sequence_parts("model.use_categories=true"),
        )


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_user_state_at_a_position_ignores_later_positions(encoder):
    """Dense training supervises every position: the state at position i (predicting i + 1) must
    not see positions > i, whatever the encoder, with or without a scale encoder of its own, with
    every input switch on."""
    for share, switches in ((True, {}), (False, {}), (True, ALL_SWITCHES)):
        model = make_model(encoder, share_encoder=share, **switches)
        rng = np.random.default_rng(1)
        n = 12
        data = one_user(
            rng.integers(1, NUM_ITEMS + 1, n), rng.integers(1, NUM_TYPES + 1, n),
            rng.integers(1, NUM_CATS + 1, n), rng.choice([0, 60, 4000, 90_000], n),
        )  # fmt: skip
        scales = parse_scales(SCALES["windows"], SCALES["max_events"])
        features = compute_window_features(data, scales)
        H = history_len(scales, MAX_LEN)
        batch = CaseBatches(data, np.array([n - 1]), np.array([0]), MAX_LEN, H, False, features)[[0]]
        with torch.no_grad():
            z = model(batch).states  # [1, L, D]
        for i in range(MAX_LEN - 1):
            later = {k: v.clone() for k, v in batch.items()}
            at = H + i + 1  # memory positions after anchor i
            later["items"][:, at:] = torch.randint(1, NUM_ITEMS + 1, later["items"][:, at:].shape)
            later["event_types"][:, at:] = 1
            later["times"][:, at:] += 12_345  # other hours, weekdays and gaps
            later["categories"][:, at:] = 1
            later["scale_stats"][:, :, i + 1 :] = torch.rand_like(later["scale_stats"][:, :, i + 1 :])
            later["window_start"][:, :, i + 1 :] = H  # wider windows for the later anchors
            with torch.no_grad():
                z2 = model(later).states
            torch.testing.assert_close(z2[:, : i + 1], z[:, : i + 1])


@pytest.mark.parametrize("fusion", [ConcatFusion, WeightedFusion, GateFusion, AttentionFusion])
def test_every_fusion_trains_and_reports_scale_weights(fusion, tmp_path):
    cfg = compose_train(
        [*TINY, f"paths.run_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"]
    )
    name = {ConcatFusion: "concat", WeightedFusion: "weighted", GateFusion: "gate", AttentionFusion: "attention"}
    cfg.model.fusion = OmegaConf.load(f"conf/model/fusion/{name[fusion]}.yaml")
    OmegaConf.resolve(cfg)
    dm = build_datamodule(cfg)
    dm.load()
    module = build_module(cfg, dm, {})
    assert isinstance(module.model.fusion, fusion)
    optimizer = module.configure_optimizers()
    losses = []
    for step, batch in zip(range(4), dm.train_dataloader(), strict=False):
        step_result = module.training_loss(batch)
        loss = step_result.loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        weights = step_result.output.scale_weights
        assert weights.shape == (4,) and math.isclose(weights.sum().item(), 1.0, rel_tol=1e-4), step
    assert all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("fusion", [ConcatFusion, WeightedFusion, GateFusion, AttentionFusion])
def test_fusion_without_ablation_equals_keeping_every_scale(fusion):
    """keep=None skips the masking; it must be exactly keep=all, and removing a scale must matter."""
    torch.manual_seed(0)
    module = fusion(dim=8, num_scales=3, dropout=0.0).eval()
    h, v = torch.randn(2, 5, 8), torch.randn(2, 3, 5, 8)
    z, w = module(h, v)
    z_all, w_all = module(h, v, torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(z, z_all)
    torch.testing.assert_close(w, w_all)
    z_drop, w_drop = module(h, v, torch.tensor([True, False, True]))
    assert not torch.allclose(z, z_drop) and w_drop[1] == 0


def test_inline_scales_and_count_windows_without_timestamps(tmp_path):
    """Scales written inline on the command line; count windows on a log without timestamps."""
    log = tmp_path / "seq.txt"
    rng = np.random.default_rng(0)
    lines = [f"{u} {rng.integers(1, 30)}" for u in range(1, 41) for _ in range(12)]
    log.write_text("\n".join(lines) + "\n")
    inline = "scales.windows=[{name: recent, window: {last: 3}}, {name: all, window: null, max_events: 20}]"
    result = run_recsys(
        ["train", *TINY[4:], "data=sasrec_text", f"data.path={log}", "data.max_len=8", inline,
         f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]
    )  # fmt: skip
    assert result.code == 0, result.err[-3000:]
    weights = (tmp_path / "run" / "scale_weights.json").read_text()
    assert '"recent"' in weights and '"all"' in weights
    timed = run_recsys(
        ["train", *TINY[4:], "data=sasrec_text", f"data.path={log}", "scales=session_all",
         f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run2'}"]
    )  # fmt: skip
    assert timed.code == 2 and "no timestamps" in timed.err


def test_ablation_prints_metrics_without_each_scale(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_recsys(
        ["train", *TINY, f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"]
    )
    assert trained.code == 0, trained.err[-3000:]
    result = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", "ablate_scales=true"])
    assert result.code == 0, result.err[-3000:]
    header = next(line for line in result.out.splitlines() if line.startswith("metric"))
    for column in ("all scales", "without session", "without day", "without month", "without all"):
        assert column in header
    row = next(line for line in result.out.splitlines() if line.startswith("ndcg@10"))
    values = [float(v) for v in row.split()[1:]]
    assert len(values) == 5 and all(0.0 <= v <= 1.0 for v in values)
