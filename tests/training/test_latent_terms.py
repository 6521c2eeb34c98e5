"""Objective terms of variational models: KL annealing, the KL term, the window and bag
reconstructions (recsys_cli.training.latent_terms), each against a computation by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys_cli.contract import DataSpec, ModelOutput, ScaleSet
from recsys_cli.errors import ConfigError
from recsys_cli.training.latent_terms import (
    BagReconstruction,
    KLTerm,
    WindowReconstruction,
    kl_weight,
)
from recsys_cli.training.losses import FullSoftmaxCE
from recsys_cli.training.objective import Objective


def test_kl_weight_rises_linearly_to_beta_then_stays():
    assert kl_weight(0, 0.2, 1000) == 0.0
    assert kl_weight(500, 0.2, 1000) == pytest.approx(0.1)
    assert kl_weight(250, 0.2, 1000) == pytest.approx(0.05)
    assert kl_weight(1000, 0.2, 1000) == pytest.approx(0.2)
    assert kl_weight(10**7, 0.2, 1000) == pytest.approx(0.2)
    assert kl_weight(0, 0.2, 0) == 0.2 and kl_weight(5, 0.3, 0) == 0.3


# mu = [1, 0], logvar = [0, log 2]: 0.5 * [(1 + 1 - 1 - 0) + (2 + 0 - 1 - log 2)] = 1 - log(2) / 2
KL_ROW = 1.0 - math.log(2.0) / 2


def test_kl_term_against_a_hand_computed_case():
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])  # second row: the prior, KL 0
    term = KLTerm(beta=0.2, anneal_steps=100)
    term.step = 50  # halfway: beta_t = 0.1
    value, logs = term(ModelOutput(aux={"latent_mu": mu, "latent_logvar": logvar}), {})
    raw = KL_ROW / 2  # mean over the two rows
    assert logs["kl_raw"].item() == pytest.approx(raw)
    assert logs["beta"].item() == pytest.approx(0.1)
    assert value.item() == pytest.approx(0.1 * raw)
    # with a mask only the first row counts
    masked = {"latent_mu": mu, "latent_logvar": logvar, "latent_mask": torch.tensor([True, False])}
    value, logs = term(ModelOutput(aux=masked), {})
    assert logs["kl_raw"].item() == pytest.approx(KL_ROW) and value.item() == pytest.approx(0.1 * KL_ROW)
    # leading dims [B, L] with a mask over them; no counted row gives 0
    per_pos = {
        "latent_mu": mu[None].expand(3, 2, 2),
        "latent_logvar": logvar[None].expand(3, 2, 2),
        "latent_mask": torch.tensor([[True, False], [True, True], [False, False]]),
    }
    term.step = 10**6
    value, logs = term(ModelOutput(aux=per_pos), {})
    assert logs["kl_raw"].item() == pytest.approx(2 * KL_ROW / 3) and value.item() == pytest.approx(0.2 * 2 * KL_ROW / 3)
    per_pos["latent_mask"] = torch.zeros(3, 2, dtype=torch.bool)
    assert term(ModelOutput(aux=per_pos), {})[0].item() == 0.0


def test_the_objective_logs_the_weighted_kl_the_raw_kl_and_beta():
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    objective = Objective({"kl": KLTerm(beta=0.5, anneal_steps=0)})
    objective.set_step(3)
    total, logs = objective(ModelOutput(aux={"latent_mu": mu, "latent_logvar": logvar}), {})
    assert set(logs) == {"kl", "kl_raw", "beta"}
    assert logs["kl"].item() == pytest.approx(0.5 * KL_ROW) == total.item()
    assert logs["kl_raw"].item() == pytest.approx(KL_ROW) and logs["beta"].item() == 0.5
    assert objective.required_outputs() == {"latent_mu", "latent_logvar"}


def test_kl_term_without_a_variational_latent_is_one_config_error_line():
    with pytest.raises(ConfigError) as err:
        KLTerm()(ModelOutput(states=torch.zeros(1, 2, 3)), {})
    message = str(err.value)
    assert "\n" not in message and message.startswith("objective.kl needs a model with a variational latent")
    assert "model/latent=vae or model=multvae" in message


def test_window_reconstruction_against_a_hand_computed_case():
    # 3 items of dimension 2; one row, 3 positions: targets [0, 2, 3] (position 0 unsupervised)
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    states = torch.tensor([[[5.0, 5.0], [1.0, 2.0], [0.5, -1.0]]])
    targets = torch.tensor([[0, 2, 3]])
    value, _ = WindowReconstruction(window=2)(ModelOutput(states=states, item_table=table), {"targets": targets})
    logp1 = F.log_softmax(torch.tensor([1.0, 2.0, 3.0]), 0)  # position 1: window {2, 3}
    logp2 = F.log_softmax(torch.tensor([0.5, -1.0, -0.5]), 0)  # position 2: window {3} (row ends)
    expected = (-(logp1[1] + logp1[2]) / 2 + -logp2[2]) / 2
    torch.testing.assert_close(value, expected)
    # a 0 inside a window does not count either
    states2 = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [0.5, -1.0]]])
    value, _ = WindowReconstruction(window=2)(
        ModelOutput(states=states2, item_table=table), {"targets": torch.tensor([[2, 0, 3]])}
    )
    torch.testing.assert_close(value, (-logp1[1] + -logp2[2]) / 2)


@pytest.mark.parametrize("held_out", [None, np.array([2, 5])])
def test_window_of_one_is_full_softmax_cross_entropy(held_out):
    torch.manual_seed(0)
    spec = DataSpec(num_items=9, num_users=1, max_len=6, scales=ScaleSet(), held_out_items=held_out)
    states, table = torch.randn(4, 6, 5), torch.randn(10, 5)
    targets = torch.randint(0, 10, (4, 6))
    if held_out is not None:  # held-out items are never training targets
        targets[torch.isin(targets, torch.as_tensor(held_out))] = 0
    output, batch = ModelOutput(states=states, item_table=table), {"targets": targets}
    window, full = WindowReconstruction(window=1, chunk_size=5), FullSoftmaxCE(chunk_size=7)
    window.bind(spec)
    full.bind(spec)
    torch.testing.assert_close(window(output, batch)[0], full(output, batch)[0])


def test_window_reconstruction_chunks_give_the_same_value_and_skip_held_out_items():
    torch.manual_seed(1)
    states, table = torch.randn(3, 5, 4), torch.randn(8, 4, requires_grad=True)
    targets = torch.tensor([[0, 1, 3, 4, 6], [2, 2, 7, 0, 1], [0, 0, 0, 3, 4]])
    output, batch = ModelOutput(states=states, item_table=table), {"targets": targets}
    whole = WindowReconstruction(window=3, chunk_size=1000)(output, batch)[0]
    chunked = WindowReconstruction(window=3, chunk_size=2)(output, batch)[0]
    torch.testing.assert_close(whole, chunked)
    term = WindowReconstruction(window=3)
    term.bind(DataSpec(num_items=7, num_users=1, max_len=5, scales=ScaleSet(), held_out_items=np.array([5])))
    term(output, batch)[0].backward()
    assert (table.grad[5] == 0).all() and torch.isfinite(table.grad).all()


def test_bag_reconstruction_against_a_hand_computation():
    logits = torch.tensor([[9.0, 1.0, 2.0, 3.0], [9.0, 0.0, 0.0, 0.0], [9.0, 5.0, 1.0, 1.0]])
    bag = torch.tensor([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # row 1: empty
    value, logs = BagReconstruction()(ModelOutput(scores=logits, aux={"bag": bag}), {})
    lp0 = F.log_softmax(torch.tensor([1.0, 2.0, 3.0]), 0)  # column 0 is not an item
    lp2 = F.log_softmax(torch.tensor([5.0, 1.0, 1.0]), 0)
    expected = (-(lp0[0] + 2 * lp0[2]) + -lp2[1]) / 2  # summed over the bag, not divided by its size
    torch.testing.assert_close(value, expected)
    assert logs == {}
    # a -inf padding column (what MultVAE gives) changes nothing
    padded = logits.clone()
    padded[:, 0] = float("-inf")
    torch.testing.assert_close(BagReconstruction()(ModelOutput(scores=padded, aux={"bag": bag}), {})[0], expected)
    # held-out items are no candidates and not counted in the bag
    term = BagReconstruction()
    term.bind(DataSpec(num_items=3, num_users=1, max_len=2, scales=ScaleSet(), held_out_items=np.array([2])))
    lp0k = F.log_softmax(torch.tensor([1.0, 3.0]), 0)  # row 2's bag held only the held-out item: empty
    torch.testing.assert_close(term(ModelOutput(scores=logits, aux={"bag": bag}), {})[0], -(lp0k[0] + 2 * lp0k[1]))
    assert BagReconstruction.requires == frozenset({"bag"})
