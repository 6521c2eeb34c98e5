"""Mult-VAE (recsys_cli.models.multvae): the bag it encodes, fold-in evaluation, deterministic
scoring, training on its objective, and the config switch ``model=multvae``."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_DATA

from recsys_cli.contract import DataSpec, ModelOutput, ScaleSet
from recsys_cli.errors import ConfigError
from recsys_cli.models.multvae import MultVAE
from recsys_cli.training.behaviour import BehaviourTerm
from recsys_cli.training.latent_terms import BagReconstruction, KLTerm
from recsys_cli.training.objective import Objective

N, L = 12, 4


def tiny_model(**kwargs) -> MultVAE:
    torch.manual_seed(0)
    spec = DataSpec(num_items=N, num_users=3, max_len=L, scales=ScaleSet())
    return MultVAE(spec, **{"hidden": 16, "latent_dim": 4, **kwargs})


def eval_batch() -> dict[str, torch.Tensor]:
    """Two evaluation cases: memory [B, L], the target in the last column, the history in seen."""
    return {
        "items": torch.tensor([[0, 3, 5, 3], [1, 2, 7, 9]]),
        "targets": torch.tensor([[0, 0, 0, 8], [0, 0, 0, 4]]),
        "seen": torch.tensor([[3, 5, 3, 0, 0, 0], [11, 6, 1, 2, 7, 9]]),
    }


def test_the_output_scores_every_item_with_padding_minus_infinity():
    model = tiny_model().eval()
    output = model(eval_batch())
    assert isinstance(output, ModelOutput) and output.states is None
    assert output.scores.shape == (2, N + 1) and output.last_scores() is output.scores
    assert torch.isneginf(output.scores[:, 0]).all() and torch.isfinite(output.scores[:, 1:]).all()
    assert output.aux["latent_mu"].shape == output.aux["latent_logvar"].shape == (2, 4)
    bag = output.aux["bag"]
    assert bag.shape == (2, N + 1) and bag.dtype == torch.float32
    # the bag of an evaluation case is its seen items, each once
    assert bag[0].nonzero().flatten().tolist() == [3, 5] and bag[0, 3] == 1.0
    assert bag[1].nonzero().flatten().tolist() == [1, 2, 6, 7, 9, 11]
    assert model.requires_training and model.scale_names == []
    model.refresh_items()
    (group,) = model.parameter_groups()
    assert len(group["params"]) == len(list(model.parameters())) == 8


def test_fold_in_reads_only_the_history_before_the_target():
    model = tiny_model().eval()
    batch = eval_batch()
    scores = model(batch).scores
    changed = dict(batch, targets=batch["targets"].clone(), items=batch["items"].clone())
    changed["targets"][:, -1] = torch.tensor([5, 12])  # another target (even one already seen)
    changed["items"][:, -1] = 10  # the memory is not read in evaluation either
    torch.testing.assert_close(model(changed).scores, scores)
    other = dict(batch, seen=batch["seen"].clone())
    other["seen"][0, 0] = 10  # one item of the first user's history differs
    moved = model(other).scores
    assert not torch.allclose(moved[0], scores[0])
    torch.testing.assert_close(moved[1], scores[1])


def test_evaluation_is_deterministic_and_training_samples():
    model = tiny_model()
    batch = eval_batch()
    model.eval()
    first, second = model(batch), model(batch)
    torch.testing.assert_close(first.scores, second.scores)
    torch.testing.assert_close(first.aux["latent_mu"], second.aux["latent_mu"])
    model.train()
    torch.manual_seed(1)
    a = model(batch).scores
    torch.manual_seed(2)
    b = model(batch).scores
    assert not torch.allclose(a[:, 1:], b[:, 1:])  # dropout and z ~ q(z | x)


def test_the_training_bag_is_the_items_and_targets_of_the_case():
    model = tiny_model().train()
    batch = {"items": torch.tensor([[0, 0, 4, 2], [1, 1, 3, 5]]), "targets": torch.tensor([[0, 0, 2, 6], [1, 3, 5, 12]])}
    bag = model(batch).aux["bag"]
    assert bag[0].nonzero().flatten().tolist() == [2, 4, 6]
    assert bag[1].nonzero().flatten().tolist() == [1, 3, 5, 12]
    assert set(bag.unique().tolist()) == {0.0, 1.0}


def test_a_few_steps_on_a_random_problem_lower_the_loss():
    model = tiny_model(dropout=0.2)
    generator = torch.Generator().manual_seed(0)
    users = (torch.rand(16, N, generator=generator) < 0.3).long() * torch.arange(1, N + 1)  # random bags
    batch = {"items": users, "targets": torch.zeros(16, 1, dtype=torch.long)}
    objective = Objective({"recon": BagReconstruction(), "kl": KLTerm(beta=0.2, anneal_steps=10)})
    assert objective.required_outputs() == {"bag", "latent_mu", "latent_logvar"}
    optimizer = torch.optim.Adam(model.parameter_groups(), lr=1e-2)

    def evaluated() -> float:
        model.eval()
        with torch.no_grad():
            return objective(model(batch), batch)[0].item()

    before = evaluated()
    for step in range(30):
        model.train()
        objective.set_step(step)
        loss, logs = objective(model(batch), batch)
        assert torch.isfinite(loss) and set(logs) == {"recon", "kl", "kl_raw", "beta"}
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluated()
    assert after < before - 0.5, (before, after)


def test_kl_on_a_model_without_a_latent_says_which_models_have_one():
    output = ModelOutput(states=torch.zeros(1, L, 8), item_table=torch.zeros(N + 1, 8))
    with pytest.raises(ConfigError, match=r"^objective\.kl needs a model with a variational latent \(model/latent=vae or model=multvae\)"):
        KLTerm()(output, {"targets": torch.zeros(1, L, dtype=torch.long)})


def test_model_multvae_builds_the_model_and_its_objective(tmp_path):
    from recsys_cli.builders import build_datamodule, build_module
    from recsys_cli.compose import compose_train

    cfg = compose_train(
        [*TINY_DATA, "model=multvae", "model.hidden=32", "model.latent_dim=8", "scales=none",
         f"paths.run_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"]
    )  # fmt: skip
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm, {})
    assert isinstance(module.model, MultVAE) and set(module.objective.terms) == {"recon", "kl"}
    train = next(iter(dm.train_dataloader()))
    step = module.training_loss(train)
    assert torch.isfinite(step.loss) and set(step.terms) == {"recon", "kl", "kl_raw", "beta"}
    assert step.terms["beta"] == 0.0  # step 0 of the annealing
    module.model.eval()
    with torch.no_grad():
        scores = module.model(next(iter(dm.val_dataloader()))).last_scores()
    assert scores.shape[1] == dm.spec().num_items + 1 and torch.isneginf(scores[:, 0]).all()


def test_model_multvae_sets_the_model_and_its_objective():
    from recsys_cli.compose import compose_train

    # the objective groups come before the model in conf/train.yaml, so the model's file wins
    cfg = compose_train(["model=multvae"])
    assert cfg.model._target_ == "recsys_cli.models.multvae.MultVAE"
    assert (cfg.model.hidden, cfg.model.latent_dim, cfg.model.dropout) == (600, 200, 0.5)
    assert cfg.objective.next_item.weight == 0
    assert cfg.objective.recon._target_ == "recsys_cli.training.latent_terms.BagReconstruction"
    assert cfg.objective.kl._target_ == "recsys_cli.training.latent_terms.KLTerm"
    assert (cfg.objective.kl.beta, cfg.objective.kl.anneal_steps) == (0.2, 40000)
    active = {name for name, node in cfg.objective.items() if node.weight != 0}
    assert active == {"recon", "kl"}


def test_multvae_refuses_outputs_it_cannot_give():
    spec = DataSpec(num_items=N, num_users=3, max_len=L, scales=ScaleSet())
    given = MultVAE(spec, hidden=8, latent_dim=2).outputs  # what the builder checks the terms against
    Objective({"recon": BagReconstruction(), "kl": KLTerm()}).check_outputs(given, "multvae")
    with pytest.raises(ConfigError, match=r"^the objective needs model outputs \['behaviour_logits'\] that model=multvae cannot give"):
        Objective({"behaviour": BehaviourTerm(), "kl": KLTerm()}).check_outputs(given, "multvae")
