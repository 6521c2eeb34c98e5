"""The sequence model's parts: a new one is one Python file and one YAML file, parts are applied
in the order the config lists them, heads are built only for what an objective term reads, and
the short switches are read by the parts, never passed to the recommender.

The first test is the worked example of docs/architecture.md ("Adding a user-state switch"): the
part below and the YAML it writes are the two files, and nothing else is edited.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY, run_recsys, sequence_parts
from torch import nn

from recsys_cli.builders import build_datamodule, build_model, build_module
from recsys_cli.compose import compose_train
from recsys_cli.contract import DataSpec, ScaleSet
from recsys_cli.contract.batch import Batch
from recsys_cli.errors import ConfigError
from recsys_cli.models.encoders import RNNEncoder
from recsys_cli.models.fusion import GateFusion
from recsys_cli.models.items import IdEmbedding
from recsys_cli.models.parts.base import ModelPart
from recsys_cli.models.recommender import SequenceRecommender

# -- the worked example: recsys_cli/models/parts/state_norm.py ----------------------------------


class StateNorm(ModelPart):
    """A LayerNorm on the fused user state (``+model/state=state_norm``)."""

    def __init__(self, spec: DataSpec, dim: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, z: torch.Tensor, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.norm(z)  # [B, A, D]


# -- and conf/model/state/state_norm.yaml (here: in a folder added to the config search path) -----
STATE_NORM_YAML = """\
# @package model.state.state_norm
# recsys train +model/state=state_norm   (a LayerNorm on the fused user state)
_target_: test_model_parts.StateNorm
_partial_: true
eps: 1.0e-5
"""


@pytest.fixture
def extra_conf(tmp_path):
    folder = tmp_path / "conf_extra"
    (folder / "model" / "state").mkdir(parents=True)
    (folder / "model" / "state" / "state_norm.yaml").write_text(STATE_NORM_YAML)
    return f"hydra.searchpath=[file://{folder}]"


def test_a_new_state_part_is_one_file_and_one_yaml_file(extra_conf, cache_dir, tmp_path):
    overrides = [*TINY, extra_conf, "+model/state=state_norm", "model/latent=vae", f"paths.cache_dir={cache_dir}"]
    cfg = compose_train(overrides)
    assert list(cfg.model.state) == ["context", "user", "latent", "state_norm"]  # added last
    dm = build_datamodule(cfg)
    dm.load()
    module = build_module(cfg, dm, {})
    assert isinstance(module.model.state["state_norm"], StateNorm)
    module.model.eval()
    with torch.no_grad():
        # the newest position's states (dot scoring: the states themselves)
        states = module.model(next(iter(dm.val_dataloader())), last_only=True).states
    torch.testing.assert_close(states.mean(-1), torch.zeros(states.shape[:-1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(states.std(-1, unbiased=False), torch.ones(states.shape[:-1]), atol=1e-3, rtol=0)
    # the whole command: trains, checkpoints, and evaluates the checkpoint to the same numbers
    run_dir = tmp_path / "run"
    trained = run_recsys(["train", *overrides, f"hydra.run.dir={run_dir}"])
    assert trained.code == 0, trained.err[-3000:]
    evaluated = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}"])
    assert evaluated.code == 0, evaluated.err[-3000:]
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    again = json.loads(sorted((run_dir / "evaluations").glob("*.json"))[-1].read_text())["results"]["all scales"]
    assert test["ndcg@10"] > 0 and again["ndcg@10"] == pytest.approx(test["ndcg@10"], abs=1e-6)


# -- the part interface --------------------------------------------------------------------------


class AddOne(ModelPart):
    def __init__(self, spec: DataSpec, dim: int):
        super().__init__()

    def forward(self, z, batch, aux):
        return z + 1


class Double(ModelPart):
    provides = frozenset({"doubled"})

    def __init__(self, spec: DataSpec, dim: int):
        super().__init__()

    def forward(self, z, batch, aux):
        aux["doubled"] = 2 * z
        return 2 * z


class MarkInputs(ModelPart):
    """Adds 100 to every event's input vector (the input hook)."""

    def __init__(self, spec: DataSpec, dim: int):
        super().__init__()

    def embed(self, batch):
        return torch.full((*batch["items"].shape, 4), 100.0)


SPEC = DataSpec(num_items=6, num_users=2, max_len=3, scales=ScaleSet())
BATCH = {  # the event fields a batch carries (contract/batch.py), times in seconds
    "items": torch.tensor([[0, 1, 2], [3, 4, 5]]),
    "times": torch.tensor([[0, 60, 120], [0, 3600, 7200]]),
    "targets": torch.tensor([[1, 2, 3], [4, 5, 6]]),
}


def tiny(**parts) -> SequenceRecommender:
    torch.manual_seed(0)
    model = SequenceRecommender(
        spec=SPEC, dim=4, encoder=lambda: RNNEncoder(4, dropout=0.0), fusion=lambda **kw: GateFusion(dropout=0.0, **kw),
        item=IdEmbedding, dropout=0.0, **parts,
    )  # fmt: skip
    return model.eval()


def test_state_parts_are_applied_in_the_listed_order_and_declare_their_outputs():
    plain = tiny().forward(BATCH).states
    add_then_double = tiny(state={"a": AddOne, "b": Double})
    double_then_add = tiny(state={"b": Double, "a": AddOne})
    torch.testing.assert_close(add_then_double.forward(BATCH).states, 2 * (plain + 1))
    torch.testing.assert_close(double_then_add.forward(BATCH).states, 2 * plain + 1)
    assert add_then_double.outputs == frozenset({"doubled"})
    assert set(add_then_double.forward(BATCH).aux) == {"doubled"}
    assert not any(True for _ in tiny(state={"a": AddOne}).state.parameters())  # no weights, no draws


def test_an_input_hook_adds_to_every_event_vector():
    model = tiny(inputs={"mark": MarkInputs})
    table = model.items()
    torch.testing.assert_close(model.embed(BATCH, table), tiny().embed(BATCH, table) + 100.0)


def test_a_head_is_built_only_for_an_output_a_term_reads(cache_dir):
    for weight, heads in ((0.0, []), (0.5, ["behaviour_logits"])):
        cfg = compose_train([*TINY, f"paths.cache_dir={cache_dir}", f"objective.behaviour.weight={weight}"])
        dm = build_datamodule(cfg)
        dm.load()
        model = build_module(cfg, dm, {}).model
        assert list(model.heads) == heads and model.outputs == frozenset(heads)
    # a head no term reads is not built, whatever the catalogue holds
    assert not tiny(heads=sequence_parts()["heads"]).heads


def test_the_switches_are_read_by_the_parts_and_a_key_the_model_does_not_take_is_one_error_line(cache_dir):
    cfg = compose_train([*TINY, f"paths.cache_dir={cache_dir}", "model.user_embedding=true", "model.user_dropout=0.3"])
    dm = build_datamodule(cfg)
    dm.load()
    model = build_model(cfg, dm.spec())
    assert model.state["user"].dropout == 0.3 and model.state["user"].embedding is not None
    cfg = compose_train([*TINY, f"paths.cache_dir={cache_dir}", "+model.colour=red"])
    with pytest.raises(ConfigError, match=r"^model \(recsys_cli.models.recommender.SequenceRecommender\): .*'colour'") as err:
        build_model(cfg, dm.spec())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["model.scoring=cosine"], "choose its option with model/scoring=cosine"),
        (["model.scoring=euclid"], "model/scoring=OPTION (cosine, dot)"),
        (["model.temperature=0.2"], "model.temperature is now model.scoring.temperature (with model/scoring=cosine)"),
        (["model/item=id_text", "model.item.fusion=gate"], "choose its option with model/item/fusion=gate"),
    ],
)
def test_a_spelling_that_moved_into_a_config_group_is_one_error_line_with_the_new_one(overrides, says):
    with pytest.raises(ConfigError) as err:
        compose_train(overrides)
    assert says in str(err.value) and "\n" not in str(err.value)
