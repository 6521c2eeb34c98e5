"""Config values that were silently accepted or wrote outside their folder: each one clear line,
before preparation where the data is not needed (names used in paths, LoRA keys, the item text
template and length), or right after it where the data decides (the catalogue for sampled
negatives, the longest history for Mult-VAE)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, TINY_DATA, assert_one_error_line, run_recsys, tiny_datamodule

from recsys_cli.builders import apply_threads, trainer_settings
from recsys_cli.checks import check_against_data, path_name_problem
from recsys_cli.compose import compose_train
from recsys_cli.data.tasks import next_item_case_ends
from recsys_cli.errors import ConfigError

TEXT = ["model/item=text", "model/item/projection=linear", "item_text.template='{title}. {category}'"]


def refused_before_preparation(tmp_path, *overrides: str, command: str = "train"):
    """Run ``recsys command overrides``; assert nothing was prepared or cached; return the result."""
    cache = tmp_path / "cache"
    extra = [f"hydra.run.dir={tmp_path / 'run'}"] if command == "train" else []
    result = run_recsys([command, *TINY, *overrides, f"paths.cache_dir={cache}", *extra])
    assert not cache.exists() or not any(cache.iterdir()), list(cache.rglob("*"))
    assert not (tmp_path / "run").exists()
    return result


# -- names used in paths --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../trav_out", "/tmp/abs_out", "a/b", "a\\b", "..", "."])
def test_a_data_name_that_leaves_the_cache_is_refused_before_preparation(tmp_path, name):
    result = refused_before_preparation(tmp_path, f"data.name='{name}'")
    assert_one_error_line(result, f"data.name={name!r}", "<paths.cache_dir>/<name>-<fingerprint>", "plain name")
    assert not (tmp_path / "trav_out").exists() and not list(tmp_path.parent.glob("trav_out*"))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("logger.csv.name=../../elsewhere", "logger.csv.name"),
        ("logger.csv.version=../x", "logger.csv.version"),
        ("callbacks.checkpoint.filename=../../best", "callbacks.checkpoint.filename"),
    ],
)
def test_other_names_used_in_paths_are_refused(tmp_path, override, key):
    assert_one_error_line(refused_before_preparation(tmp_path, override), key, "path separator")


def test_prepare_refuses_a_name_outside_the_cache(tmp_path):
    result = refused_before_preparation(tmp_path, "data.name=../out", command="prepare")
    assert_one_error_line(result, "data.name='../out'")


def test_the_cache_itself_refuses_a_folder_outside_it(tmp_path):
    """The last line of defence, where the folder is made: any caller of prepare()."""
    from recsys_cli.data.prepare import prepare

    cfg, dm = tiny_datamodule(tmp_path)
    with pytest.raises(ConfigError, match=r"^data\.name='\.\./out': the prepared cache would go to .*outside paths\.cache_dir"):
        prepare(dm.reader, dm.preparation, tmp_path / "cache2", "../out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out-*"))


@pytest.mark.parametrize(("value", "refused"), [("ml-1m", False), ("ml..1m", False), (3, False), ("", False),
                                                ("a/b", True), ("..", True), ("x\\y", True), ("/abs", True)])  # fmt: skip
def test_which_names_are_plain(value, refused):
    assert (path_name_problem(value) is not None) == refused


# -- the language model's settings ----------------------------------------------------------------


def test_an_unknown_lora_key_names_the_valid_ones(tmp_path, tiny_language_model):
    result = refused_before_preparation(tmp_path, *TEXT, f"item_text.model={tiny_language_model}",
                                        "item_text.finetune.lora={r:8,alhpa:16}")  # fmt: skip
    assert_one_error_line(result, "item_text.finetune.lora.alhpa: unknown key (did you mean alpha?)",
                          "valid keys: r, alpha, dropout, target_modules")  # fmt: skip


@pytest.mark.parametrize(("lora", "fragment"), [("{r:0}", "lora.r=0: use a positive integer"),
                                                ("{dropout:1.5}", "lora.dropout=1.5: use a fraction"),
                                                ("{target_modules:[]}", "lora.target_modules=[]"),
                                                ("7", "lora=7: use null or a mapping")])  # fmt: skip
def test_lora_values_out_of_range_are_one_line(tmp_path, tiny_language_model, lora, fragment):
    result = refused_before_preparation(tmp_path, *TEXT, f"item_text.model={tiny_language_model}", f"item_text.finetune.lora={lora}")
    assert_one_error_line(result, fragment)


def test_a_max_length_beyond_the_models_positions_is_one_line(tmp_path, tiny_language_model):
    result = refused_before_preparation(tmp_path, *TEXT, f"item_text.model={tiny_language_model}", "item_text.max_length=100")
    assert_one_error_line(result, "item_text.max_length=100", "reads at most 64 tokens", "max_length <= 64")


@pytest.mark.parametrize(
    ("template", "fragment"),
    [("'{titel}'", "unknown fields ['titel']"), ("'{title'", "expected '}'"), ("'{title!x}'", "Unknown conversion")],
)
def test_template_errors_come_before_preparation(tmp_path, tiny_language_model, template, fragment):
    result = refused_before_preparation(tmp_path, *TEXT[:2], f"item_text.model={tiny_language_model}", f"item_text.template={template}")
    assert_one_error_line(result, "item_text.template=", fragment)


def test_item_text_settings_are_not_checked_for_a_model_without_text(tmp_path):
    from recsys_cli.checks import validate_config

    cfg, _ = tiny_datamodule(tmp_path, "item_text.template='{titel}'", "item_text.model=/no/such/model")
    validate_config(cfg)  # model/item=id: the language model is never read


# -- what the data decides ------------------------------------------------------------------------


def test_more_sampled_negatives_than_items_is_refused(tmp_path):
    cfg, dm = tiny_datamodule(tmp_path, "objective/next_item=sampled_softmax", "objective.next_item.num_negatives=500")
    with pytest.raises(ConfigError, match=r"^objective\.next_item\.num_negatives=500: the catalogue has only 80 items.*full_ce") as err:
        check_against_data(cfg, dm.spec(), "synthetic")
    assert "\n" not in str(err.value)
    cfg, dm = tiny_datamodule(tmp_path, "objective/next_item=sampled_softmax", "objective.next_item.num_negatives=79")
    check_against_data(cfg, dm.spec(), "synthetic")


def test_multvae_needs_every_users_history_in_one_bag(tmp_path):
    """A training case holds data.max_len targets; Mult-VAE (and its evaluation) reads a user's
    whole history as one bag, so the minimum is the longest user's training targets: from there
    on every user is one training case."""
    overrides = ["model=multvae", "model.hidden=32", "model.latent_dim=8", "scales=none"]
    cfg, dm = tiny_datamodule(tmp_path, *overrides)
    starts = dm.train_data.offsets[:-1]
    longest = int((dm.train_end - starts).max()) - 1
    result = run_recsys(["train", *TINY_DATA, *overrides, "data.max_len=2", f"paths.cache_dir={tmp_path / 'cache'}",
                         f"hydra.run.dir={tmp_path / 'run'}"])  # fmt: skip
    assert_one_error_line(result, "data.max_len=2: model=multvae", f"up to {longest} training targets", f"data.max_len={longest} or more")
    for max_len, cases in ((longest - 1, None), (longest, len(starts))):
        ends, _, _ = next_item_case_ends(starts, dm.train_end, max_len, "all")
        assert (len(ends) == cases) if cases else len(ends) > len(starts)  # one case per user from the minimum on
    cfg, dm = tiny_datamodule(tmp_path, *overrides, f"data.max_len={longest}")
    check_against_data(cfg, dm.spec(), "synthetic", longest)
    with pytest.raises(ConfigError, match=rf"data\.max_len={longest - 1}: model=multvae"):
        cfg, dm = tiny_datamodule(tmp_path, *overrides, f"data.max_len={longest - 1}")
        check_against_data(cfg, dm.spec(), "synthetic", longest)


# -- threads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_threads_must_be_a_positive_integer(tmp_path, value):
    result = refused_before_preparation(tmp_path, f"trainer.threads={value}")
    assert_one_error_line(result, "trainer.threads=", "use an integer >= 1")


def test_threads_set_the_process_threads_and_leave_the_trainer_alone():
    cfg = compose_train([*TINY, "trainer.threads=1"])
    before = torch.get_num_threads()
    try:
        apply_threads(cfg)
        assert torch.get_num_threads() == 1
        assert "threads" not in trainer_settings(cfg)  # not a Trainer argument
        apply_threads(compose_train(TINY))  # null: torch's choice stays
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
