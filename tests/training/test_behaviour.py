"""Next-behaviour prediction: the type cross-entropy term, the baselines and the type metrics.

Every expected number is computed by hand in the comments; AUCs also from the pairwise definition
P(score of a positive > score of a negative) + 0.5 P(tie), never with a library.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO

from recsys_cli.contract.data_spec import DataSpec, type_transitions
from recsys_cli.contract.output import ModelOutput
from recsys_cli.contract.scales import ScaleSet
from recsys_cli.errors import ConfigError
from recsys_cli.training.behaviour import (
    BehaviourBaselines,
    BehaviourMetrics,
    BehaviourTerm,
    sync_behaviour_distributed,
)

NAMES = ("view", "cart", "buy")


def _spec(types: tuple[str, ...]) -> DataSpec:
    return DataSpec(num_items=5, num_users=2, max_len=2, scales=ScaleSet(), event_types=types)


def _pairwise_auc(scores: list[float], positive: list[bool]) -> float:
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


# -- the term ----------------------------------------------------------------------------------


def test_term_is_the_cross_entropy_of_the_known_target_types():
    # [B=2, L=2, K=3]; logits = log(p) so softmax(logits) = p exactly enough
    probs = torch.tensor(
        [
            [[1 / 3, 1 / 3, 1 / 3], [0.98, 0.01, 0.01]],  # (0, 1) has target 0: ignored
            [[1 / 8, 2 / 8, 5 / 8], [3 / 8, 1 / 8, 4 / 8]],
        ]
    )
    logits = probs.log().requires_grad_(True)
    target_types = torch.tensor([[1, 0], [3, 2]])
    term = BehaviourTerm(weight=0.5)
    term.bind(_spec(NAMES))
    value, logs = term(ModelOutput(aux={"behaviour_logits": logits}), {"target_types": target_types})
    # -log(1/3) for type 1 at (0, 0); -log(5/8) for type 3 at (1, 0); -log(1/8) for type 2 at (1, 1)
    expected = (math.log(3) + math.log(8 / 5) + math.log(8)) / 3
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert logs == {}
    assert term.weight == 0.5
    assert term.requires == frozenset({"behaviour_logits"})
    value.backward()
    assert torch.all(logits.grad[0, 1] == 0)  # the unsupervised position gets no gradient
    assert torch.any(logits.grad[1, 1] != 0)


def test_term_without_known_target_is_zero_and_keeps_the_graph():
    logits = torch.randn(2, 3, 2, requires_grad=True)
    value, _ = BehaviourTerm()(ModelOutput(aux={"behaviour_logits": logits}), {"target_types": torch.zeros(2, 3, dtype=torch.long)})
    assert value.item() == 0.0
    value.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_term_rejects_logits_of_the_wrong_number_of_types():
    term = BehaviourTerm()
    term.bind(_spec(NAMES))
    output = ModelOutput(aux={"behaviour_logits": torch.zeros(1, 2, 4)})
    with pytest.raises(ValueError, match="4 classes"):
        term(output, {"target_types": torch.ones(1, 2, dtype=torch.long)})


@pytest.mark.parametrize("types", [(), ("click",)])
def test_bind_without_two_event_types_is_a_config_error(types):
    with pytest.raises(ConfigError) as error:
        BehaviourTerm(weight=1.0).bind(_spec(types))
    message = str(error.value)
    assert "\n" not in message
    assert f"{len(types)} event type" in message
    assert "objective.behaviour.weight=0" in message and "event-type column" in message


def test_bind_accepts_two_types_and_a_switched_off_term():
    BehaviourTerm().bind(_spec(("view", "buy")))
    BehaviourTerm(weight=0.0).bind(_spec(()))  # the fix the error suggests must not fail itself


def test_config_file_builds_the_term():
    path = REPO / "conf" / "objective" / "behaviour" / "type_ce.yaml"
    text = path.read_text()
    node = yaml.safe_load(text)
    # off by default (no head, the default run unchanged); one override turns it on
    assert node == {"_target_": "recsys_cli.training.behaviour.BehaviourTerm", "weight": 0.0}
    assert "recsys train objective.behaviour.weight=0.5" in text
    from hydra.utils import instantiate

    assert isinstance(instantiate(node), BehaviourTerm)


# -- transitions and baselines -----------------------------------------------------------------


def test_type_transitions_counts_consecutive_pairs():
    seq = np.array([1, 1, 2, 3, 2, 0, 1])
    counts = type_transitions(seq[:-1], seq[1:], num_types=3)
    # pairs: (1,1) (1,2) (2,3) (3,2) (2,0) (0,1)
    expected = np.zeros((4, 4), dtype=np.int64)
    for a, b in [(1, 1), (1, 2), (2, 3), (3, 2), (2, 0), (0, 1)]:
        expected[a, b] += 1
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, expected)
    with pytest.raises(ValueError, match="0..3"):
        type_transitions(np.array([4]), np.array([1]), num_types=3)
    with pytest.raises(ValueError, match="same shape"):
        type_transitions(np.array([1, 2]), np.array([1]), num_types=3)


# rows = previous type 0..3, columns = next type 0..3
COUNTS = np.array(
    [
        [0, 0, 1, 0],  # unknown last type: ignored, the overall distribution is used
        [0, 3, 1, 1],  # view -> [3, 1, 1] / 5
        [5, 0, 0, 0],  # cart: only successors of unknown type -> overall
        [0, 0, 1, 3],  # buy -> [0, 1, 3] / 4
    ]
)
OVERALL = [0.3, 0.3, 0.4]  # column sums of types 1..3: 3, 3, 4 of 10


def test_majority_and_markov_probabilities():
    baselines = BehaviourBaselines(COUNTS)
    assert baselines.majority_type == 3
    last = torch.tensor([0, 1, 2, 3])
    np.testing.assert_allclose(baselines.majority(last).numpy(), [OVERALL] * 4)
    np.testing.assert_allclose(
        baselines.markov(last).numpy(),
        [OVERALL, [0.6, 0.2, 0.2], OVERALL, [0.0, 0.25, 0.75]],
    )
    with pytest.raises(ValueError, match="0..3"):
        baselines.markov(torch.tensor([4]))


def test_baseline_ties_and_empty_counts():
    tied = BehaviourBaselines(np.array([[0, 0, 0], [0, 2, 2], [0, 0, 0]]))
    assert tied.majority_type == 1  # ties go to the smallest type
    empty = BehaviourBaselines(np.zeros((3, 3)))
    np.testing.assert_allclose(empty.markov(torch.tensor([0, 2])).numpy(), [[0.5, 0.5]] * 2)


# -- metrics -----------------------------------------------------------------------------------

# six evaluated cases (3 view, 2 cart, 1 buy: uneven) and one without a target type (skipped)
PROBS = [
    [0.53, 0.02, 0.45],  # view -> view   (right)
    [0.50, 0.40, 0.10],  # view -> view   (right)
    [0.20, 0.70, 0.10],  # view -> cart   (wrong)
    [0.30, 0.60, 0.10],  # cart -> cart   (right)
    [0.50, 0.40, 0.10],  # cart -> view   (wrong); the same scores as case 2: ties
    [0.30, 0.30, 0.40],  # buy  -> buy    (right)
    [0.01, 0.01, 0.98],  # no target type: skipped
]
TARGETS = [1, 1, 1, 2, 2, 3, 0]
LAST = [1, 3, 0, 1, 2, 3, 1]


def _batch(rows=slice(None)):
    return (
        torch.tensor(PROBS[rows]).log(),
        torch.tensor(TARGETS[rows]),
        torch.tensor(LAST[rows]),
    )


def _metrics() -> BehaviourMetrics:
    return BehaviourMetrics(NAMES, BehaviourBaselines(COUNTS))


def test_metrics_of_the_head_by_hand():
    metrics = _metrics()
    metrics.update(*_batch())
    result = metrics.compute()
    assert result["behaviour/cases"] == 6 and isinstance(result["behaviour/cases"], int)
    assert result["behaviour/accuracy"] == pytest.approx(4 / 6)
    # F1 = 2 tp / (2 tp + fp + fn): view tp 2 fp 1 fn 1 -> 2/3; cart tp 1 fp 1 fn 1 -> 1/2; buy 1
    assert result["behaviour/macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # view: positives .53 .50 .20 vs negatives .30 .50 .30 -> 3 + (1 + .5 + 1) + 0 = 5.5 of 9
    # cart: positives .60 .40 vs negatives .02 .40 .70 .30 -> 3 + 2.5 = 5.5 of 8
    # buy: positive .40 vs negatives .45 .10 .10 .10 .10 -> 4 of 5
    expected_auc = {"view": 5.5 / 9, "cart": 5.5 / 8, "buy": 4 / 5}
    for c, name in enumerate(NAMES):
        scores = [row[c] for row in PROBS[:6]]
        positive = [t == c + 1 for t in TARGETS[:6]]
        assert _pairwise_auc(scores, positive) == pytest.approx(expected_auc[name])
        assert result[f"behaviour/auc/{name}"] == pytest.approx(expected_auc[name], abs=1e-6)


def test_metrics_of_the_baselines_by_hand():
    metrics = _metrics()
    metrics.update(*_batch())
    result = metrics.compute()
    # majority: always buy (0.4) -> right only for case 6
    assert result["behaviour/majority/accuracy"] == pytest.approx(1 / 6)
    # view tp 0 fn 3 -> 0; cart tp 0 fn 2 -> 0; buy tp 1 fp 5 -> 2/7
    assert result["behaviour/majority/macro_f1"] == pytest.approx((2 / 7) / 3)
    for name in NAMES:
        assert result[f"behaviour/majority/auc/{name}"] == pytest.approx(0.5)  # a constant score
    # markov by last type [1, 3, 0, 1, 2, 3]: [.6 .2 .2] [0 .25 .75] overall [.6 .2 .2] overall [0 .25 .75]
    # predictions view buy buy view buy buy: right for cases 1 and 6
    assert result["behaviour/markov/accuracy"] == pytest.approx(2 / 6)
    # view tp 1 fp 1 fn 2 -> 2/5; cart tp 0 fn 2 -> 0; buy tp 1 fp 3 -> 2/5
    assert result["behaviour/markov/macro_f1"] == pytest.approx((0.4 + 0 + 0.4) / 3)
    markov = BehaviourBaselines(COUNTS).markov(torch.tensor(LAST[:6])).tolist()
    # view: .6 .0 .3 vs .6 .3 .0 -> 2.5 + .5 + 1.5 of 9; cart: .2 .3 vs .2 .25 .3 .25 -> .5 + 3.5 of 8
    # buy: .75 vs .2 .75 .4 .2 .4 -> 4.5 of 5
    expected_auc = {"view": 4.5 / 9, "cart": 4 / 8, "buy": 4.5 / 5}
    for c, name in enumerate(NAMES):
        positive = [t == c + 1 for t in TARGETS[:6]]
        assert _pairwise_auc([row[c] for row in markov], positive) == pytest.approx(expected_auc[name])
        assert result[f"behaviour/markov/auc/{name}"] == pytest.approx(expected_auc[name])


def test_macro_f1_leaves_out_a_type_never_seen_and_auc_of_absent_types_is_omitted():
    metrics = BehaviourMetrics(NAMES)  # no baselines: no baseline keys
    # targets view, cart; both predicted view; buy neither a target nor predicted
    metrics.update(torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]]).log(), torch.tensor([1, 2]), torch.tensor([0, 0]))
    result = metrics.compute()
    # view tp 1 fp 1 -> 2/3; cart fn 1 -> 0; buy left out -> mean of two, not of three
    assert result["behaviour/macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert result["behaviour/auc/view"] == pytest.approx(1.0)  # .7 > .6
    assert result["behaviour/auc/cart"] == pytest.approx(1.0)  # .3 > .2
    assert "behaviour/auc/buy" not in result  # the target of no case
    assert not any(key.startswith(("behaviour/majority", "behaviour/markov")) for key in result)
    one_type = BehaviourMetrics(NAMES)
    one_type.update(torch.zeros(2, 3), torch.tensor([2, 2]), torch.tensor([0, 0]))
    assert not any("/auc/" in key for key in one_type.compute())  # cart is the target of every case


def test_batches_add_up_to_one_batch_and_reset_forgets():
    whole = _metrics()
    whole.update(*_batch())
    split = _metrics()
    split.update(*_batch(slice(0, 2)))
    split.update(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    split.update(*_batch(slice(2, 7)))
    assert split.count == whole.count == 6
    assert split.compute() == whole.compute()
    for name, value in whole.state().items():
        assert torch.equal(split.state()[name], value)

    split.reset()
    assert split.count == 0
    empty = split.compute()
    assert empty["behaviour/cases"] == 0 and math.isnan(empty["behaviour/accuracy"])
    split.update(*_batch(slice(3, 5)))
    fresh = _metrics()
    fresh.update(*_batch(slice(3, 5)))
    assert split.compute() == fresh.compute()


def test_state_round_trip_and_sync_without_a_process_group():
    source = _metrics()
    source.update(*_batch())
    copy = _metrics()
    copy.load_state(source.state())
    assert copy.compute() == source.compute()
    sync_behaviour_distributed(source)  # no process group: nothing changes
    assert source.compute() == copy.compute()


def test_update_rejects_bad_shapes_and_types():
    metrics = _metrics()
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        metrics.update(torch.zeros(2, 4), torch.tensor([1, 1]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="0..3"):
        metrics.update(torch.zeros(2, 3), torch.tensor([1, 4]), torch.tensor([0, 0]))
