"""The model contract: batch schema, data spec, typed model output, composable objective, the
checkpoint format and the import structure that keeps models/ and training/ off data/."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, TINY_BASELINE, run_recsys, tiny_datamodule

from recsys_cli.builders import build_module
from recsys_cli.checkpoints import CHECKPOINT_FORMAT, fill_encoder_keys
from recsys_cli.checks import validate_config
from recsys_cli.compose import compose_train
from recsys_cli.contract import ModelOutput
from recsys_cli.contract.batch import EVAL_FIELDS, TRAIN_FIELDS, WINDOW_FIELDS, eval_targets
from recsys_cli.errors import ConfigError
from recsys_cli.training.objective import Objective, ObjectiveTerm

PACKAGE = REPO / "recsys_cli"


@pytest.mark.parametrize("scales", ["session_day_month_all", "none"])
def test_batches_carry_exactly_the_declared_fields(tmp_path, scales):
    _, dm = tiny_datamodule(tmp_path, f"scales={scales}")
    spec = dm.spec()
    windows = WINDOW_FIELDS if len(spec.scales) else ()
    train = next(iter(dm.train_dataloader()))
    assert set(train) == {*TRAIN_FIELDS, *windows}
    evaluation = next(iter(dm.val_dataloader()))
    assert set(evaluation) == {*EVAL_FIELDS, *windows}
    L, H = spec.max_len, spec.history_len
    # a batch's common leading padding is trimmed: L' <= L positions, and the older history only
    # when the positions are all there
    for batch in (train, evaluation):
        B, T = batch["items"].shape
        Lb = batch["targets"].shape[1]
        assert Lb <= L and T <= H + L and (T == Lb if Lb < L else T >= L)
        assert (batch["items"][:, 0] > 0).any(), "a leading column that is padding in every case"
    # evaluation supervises the newest position only: the held-out item
    assert (evaluation["targets"][:, :-1] == 0).all() and (eval_targets(evaluation) > 0).all()
    cases = dm.eval_cases("val")
    first = next(iter(dm.val_dataloader().sampler))  # evaluation goes by length: the shortest first
    np.testing.assert_array_equal(eval_targets(evaluation).numpy(), dm.data.items[cases.ends[first]])
    assert (np.diff(cases.lengths()[first]) >= 0).all()
    if windows:
        assert train["scale_stats"].shape[1:] == (len(spec.scales), train["targets"].shape[1], len(spec.stat_names))
        assert spec.stat_names[: 1] == ("log_count",) and spec.stat_names[-1] == f"type_{spec.event_types[-1]}"


def test_the_spec_describes_the_prepared_data(tmp_path):
    _, dm = tiny_datamodule(tmp_path)
    spec, data = dm.spec(), dm.data
    assert (spec.num_items, spec.num_users, spec.num_event_types) == (data.num_items, data.num_users, data.num_event_types)
    assert spec.scales.names == ["session", "day", "month", "all"] and spec.has_time


@pytest.mark.parametrize(
    "overrides",
    [["model/encoder=gru"], ["model/encoder=transformer", "scales=none"], ["model=popularity"], ["model=markov"]],
)
def test_every_model_returns_a_model_output(tmp_path, overrides):
    cfg, dm = tiny_datamodule(tmp_path, *overrides)
    module = build_module(cfg, dm, {})
    if not module.model.requires_training:
        module.model.fit(*dm.train_events())
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        output = module.model.eval()(batch)
    assert isinstance(output, ModelOutput)
    scores = output.last_scores()
    assert scores.shape == (batch["items"].shape[0], dm.spec().num_items + 1)
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    if module.model.requires_training:
        assert output.states.shape[1:] == (dm.spec().max_len, cfg.model.dim)
        assert output.item_table.shape == (dm.spec().num_items + 1, cfg.model.dim)
        assert (output.scale_weights is None) == (len(dm.spec().scales) == 0)


def test_count_baselines_see_only_training_events(tmp_path):
    _, dm = tiny_datamodule(tmp_path)
    items, users = dm.train_events()
    held_out = np.concatenate([dm.split.val_targets, dm.split.test_targets])
    assert len(items) == dm.data.num_events - len(held_out) and len(items) == len(users)
    assert np.all(np.diff(users) >= 0)


class Constant(ObjectiveTerm):
    """A term with a fixed value that counts its calls."""

    def __init__(self, value: float, weight: float = 1.0):
        super().__init__(weight)
        self.value, self.calls = value, 0

    def __call__(self, output, batch):
        self.calls += 1
        return torch.tensor(self.value), {"extra": torch.tensor(2 * self.value)}


def test_objective_is_the_weighted_sum_of_its_terms():
    a, b, off = Constant(2.0), Constant(3.0, weight=0.5), Constant(7.0, weight=0.0)
    objective = Objective({"a": a, "b": b, "off": off})
    total, logs = objective(ModelOutput(), {})
    assert total.item() == pytest.approx(2.0 + 0.5 * 3.0)
    assert logs["a"].item() == 2.0 and logs["b"].item() == 3.0 and "off" not in logs
    assert off.calls == 0 and objective.log_names() == ["a", "b"]
    with pytest.raises(ConfigError, match="every term has weight 0"):
        Objective({"off": off})


def test_the_next_item_term_matches_cross_entropy_by_hand():
    from recsys_cli.training.losses import FullSoftmaxCE

    torch.manual_seed(0)
    states, table = torch.randn(2, 3, 4), torch.randn(6, 4)
    targets = torch.tensor([[0, 2, 5], [1, 0, 3]])
    value, _ = FullSoftmaxCE(chunk_size=2)(ModelOutput(states=states, item_table=table), {"targets": targets})
    sel = targets > 0
    expected = torch.nn.functional.cross_entropy(states[sel] @ table[1:].T, targets[sel] - 1)
    torch.testing.assert_close(value, expected)


def test_monitoring_accepts_any_logged_metric():
    for monitor in ("train/next_item", "train/loss", "scale_weight/session", "val/hr@5"):
        validate_config(compose_train([f"callbacks.early_stopping.monitor={monitor}"]))
    with pytest.raises(ConfigError, match=r"callbacks.early_stopping.monitor='train/kl' is not a metric this run logs"):
        validate_config(compose_train(["callbacks.early_stopping.monitor=train/kl"]))
    with pytest.raises(ConfigError, match="optimized_metric"):
        validate_config(compose_train(["optimized_metric=train/loss"]))


def test_a_term_is_chosen_in_config_and_logged_by_name(tmp_path):
    run_dir = tmp_path / "run"
    result = run_recsys(
        ["train", *TINY, "objective/next_item=sampled_softmax", "objective.next_item.num_negatives=20",
         "callbacks.early_stopping.monitor=train/next_item", "callbacks.early_stopping.mode=min",
         f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"]
    )  # fmt: skip
    assert result.code == 0, result.err[-3000:]
    header = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/next_item" in header and "train/loss_epoch" in header


def _as_format_1(ckpt: dict) -> dict:
    """A checkpoint as the version before the model contract wrote it."""
    info = ckpt["recsys"]
    config = info["config"]
    config["loss"] = {k: v for k, v in config.pop("objective")["next_item"].items() if k != "weight"}
    config["data"]["scales"] = config["model"]["scales"] = config["scales"]
    config["model"]["max_len"] = config["data"]["max_len"]
    del config["model"]["item"]
    info["format"] = 1
    state = ckpt["state_dict"]
    state["model.item_embedding.weight"] = state.pop("model.items.embedding.weight")
    return ckpt


def test_checkpoints_of_the_previous_format_still_evaluate(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_recsys(["train", *TINY, f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"])
    assert trained.code == 0, trained.err[-3000:]
    best = run_dir / "checkpoints" / "best.ckpt"
    ckpt = torch.load(best, weights_only=True)
    assert ckpt["recsys"]["format"] == CHECKPOINT_FORMAT
    old = tmp_path / "old" / "checkpoints" / "best.ckpt"
    old.parent.mkdir(parents=True)
    torch.save(_as_format_1(ckpt), old)
    result = run_recsys(["evaluate", f"ckpt={old}"])
    assert result.code == 0, result.err[-3000:]
    evaluations = sorted((tmp_path / "old" / "evaluations").glob("*.json"))
    evaluated = json.loads(evaluations[-1].read_text())["results"]["all scales"]
    trained_test = json.loads((run_dir / "metrics.json").read_text())["test"]
    for name, value in trained_test.items():
        assert evaluated[name] == pytest.approx(value, abs=1e-6), name
    resumed = run_recsys(["train", *TINY, f"ckpt_path={old}", f"paths.cache_dir={tmp_path / 'cache'}",
                          f"hydra.run.dir={tmp_path / 'resumed'}"])  # fmt: skip
    errors = [line for line in resumed.err.splitlines() if line.startswith("error: ")]
    assert resumed.code == 2 and len(errors) == 1 and "older recsys (format 1" in errors[0], resumed.err[-2000:]


# weight names of the version before the model parts (format 2), by hand
FORMAT_2_NAMES = {
    "model.inputs.event_types.table.": "model.type_embedding.",
    "model.inputs.categories.table.": "model.category_embedding.",
    "model.state.context.": "model.context.",
    "model.state.user.embedding.": "model.user_embedding.",
    "model.state.latent.": "model.latent.",
    "model.heads.behaviour_logits.linear.": "model.behaviour_head.",
    "model.scoring.": "model.",
}


def _as_format_2(ckpt: dict) -> dict:
    """A checkpoint as the version before the model parts wrote it: the switches as flat keys of
    ``model`` (the latent a ``model.latent`` node, the scoring a string), the weights under the
    recommender's own names, and a Transformer config without its block keys."""
    info = ckpt["recsys"]
    model = info["config"]["model"]
    for key in ("_switches_", "inputs", "heads"):
        del model[key]
    state = model.pop("state")
    model["latent"] = {"_target_": "recsys_cli.models.latent.VariationalLatent", "_partial_": True}
    assert set(state) == {"context", "user", "latent"}
    scoring = model.pop("scoring")
    model["scoring"] = "cosine"
    model["temperature"], model["learn_temperature"] = scoring["temperature"], scoring["learn_temperature"]
    del model["encoder"]["norm"], model["encoder"]["activation"]
    info["format"] = 2
    renamed = {}
    for name, value in ckpt["state_dict"].items():
        new = next((name.replace(n, o, 1) for n, o in FORMAT_2_NAMES.items() if name.startswith(n)), name)
        renamed[new] = value
    assert "model.behaviour_head.weight" in renamed and "model.log_scale" in renamed
    ckpt["state_dict"] = renamed
    return ckpt


def test_a_checkpoint_from_before_the_model_parts_evaluates_to_the_same_numbers(tmp_path):
    run_dir = tmp_path / "run"
    switches = [
        "objective.behaviour.weight=0.5", "model.context=[hour,weekday,gap]", "model.user_embedding=true",
        "model.use_categories=true", "model/latent=vae", "model/scoring=cosine",
        "model.encoder.norm=pre", "model.encoder.activation=gelu",  # the block before these keys
    ]  # fmt: skip
    trained = run_recsys(["train", *TINY, *switches, f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"])
    assert trained.code == 0, trained.err[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    old = tmp_path / "old" / "checkpoints" / "best.ckpt"
    old.parent.mkdir(parents=True)
    torch.save(_as_format_2(ckpt), old)
    result = run_recsys(["evaluate", f"ckpt={old}"])
    assert result.code == 0, result.err[-3000:]
    evaluated = json.loads(sorted((tmp_path / "old" / "evaluations").glob("*.json"))[-1].read_text())
    trained_test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert {"behaviour/accuracy", "ndcg@10"} <= set(trained_test)
    assert evaluated["results"]["all scales"].keys() == trained_test.keys()
    for name, value in trained_test.items():
        assert evaluated["results"]["all scales"][name] == pytest.approx(value, abs=1e-6), name
    resumed = run_recsys(["train", *TINY, *switches, f"ckpt_path={old}", f"paths.cache_dir={tmp_path / 'cache'}",
                          f"hydra.run.dir={tmp_path / 'resumed'}"])  # fmt: skip
    errors = [line for line in resumed.err.splitlines() if line.startswith("error: ")]
    assert resumed.code == 2 and len(errors) == 1 and "older recsys (format 2" in errors[0], resumed.err[-2000:]


def test_a_baseline_checkpoint_of_the_previous_format_evaluates(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_recsys(["train", *TINY_BASELINE, "model=markov", f"paths.cache_dir={tmp_path / 'cache'}",
                          f"hydra.run.dir={run_dir}"])  # fmt: skip
    assert trained.code == 0, trained.err[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    config = ckpt["recsys"]["config"]
    config["loss"] = {k: v for k, v in config.pop("objective")["next_item"].items() if k != "weight"}
    config["data"]["scales"] = config["scales"]
    ckpt["recsys"]["format"] = 1
    torch.save(ckpt, run_dir / "checkpoints" / "old.ckpt")
    result = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'old.ckpt'}"])
    assert result.code == 0, result.err[-3000:]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("package", ["models", "training", "contract"])
def test_models_training_and_the_contract_do_not_import_the_data_package(package):
    for path in sorted((PACKAGE / package).rglob("*.py")):
        bad = sorted(m for m in _imports(path) if m == "recsys_cli.data" or m.startswith("recsys_cli.data."))
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_subpackages_never_import_the_entry_modules_above_them():
    """``commands/`` (the verbs, read only by ``cli.py``) is the top layer, above the entry modules."""
    entry = {f"recsys_cli.{name}" for name in ("train", "evaluate", "cli", "builders", "checks", "reporting")}
    top = PACKAGE / "commands"
    for path in sorted(PACKAGE.rglob("*.py")):
        imports = _imports(path)
        if path.parent != top and path.name != "cli.py":
            verbs = sorted(m for m in imports if m == "recsys_cli.commands" or m.startswith("recsys_cli.commands."))
            assert not verbs, f"{path.relative_to(PACKAGE)} imports the verbs {verbs}"
        if path.parent in (PACKAGE, top):
            continue
        bad = sorted(imports & entry)
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_the_moved_loss_group_says_where_it_went():
    result = run_recsys(["train", "loss=bce"])
    assert result.code == 2
    assert "error: loss=bce: the 'loss' group is now 'objective/next_item'" in result.err
    assert "write objective/next_item=bce" in result.err


def test_a_transformer_saved_before_its_block_keys_is_rebuilt_with_the_block_it_trained():
    """Configs saved before ``norm`` and ``activation`` were keys trained pre-norm GELU blocks (the
    class defaults of the time); the keys are filled in, and never overwritten when present."""
    target = "recsys_cli.models.encoders.TransformerEncoder"
    old = {"model": {"encoder": {"_target_": target, "dim": 8}}}
    fill_encoder_keys(old)
    assert old["model"]["encoder"] == {"_target_": target, "dim": 8, "norm": "pre", "activation": "gelu"}
    new = {"model": {"encoder": {"_target_": target, "norm": "post", "activation": "relu"}}}
    fill_encoder_keys(new)
    assert (new["model"]["encoder"]["norm"], new["model"]["encoder"]["activation"]) == ("post", "relu")
    gru = {"model": {"encoder": {"_target_": "recsys_cli.models.encoders.RNNEncoder"}}}
    fill_encoder_keys(gru)
    assert gru == {"model": {"encoder": {"_target_": "recsys_cli.models.encoders.RNNEncoder"}}}
