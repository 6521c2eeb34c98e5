"""Shared fixtures: tiny configs and an in-process ``recsys`` runner.

The CLI runs in this process (``recsys_cli.cli.main``), with every output under pytest's temporary
folders. The tiny synthetic dataset (60 users, 80 items) uses only reader keys that stay stable
(``num_users``, ``num_items``, ``num_categories``, ``days``, ``seed``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# the repository's root folder (tests live in subfolders that mirror the package)
REPO = Path(__file__).resolve().parent.parent

TINY_DATA = [
    "data.reader.num_users=60",
    "data.reader.num_items=80",
    "data.reader.num_categories=4",
    "data.reader.days=20",
    "data.max_len=10",
]
# a small neural model trained for two epochs; the progress bar stays quiet in test logs
TINY = [*TINY_DATA, "model.dim=16", "trainer.max_epochs=2", "callbacks.progress_bar.refresh_rate=0"]
# count baselines have no model.dim and no training
TINY_BASELINE = [*TINY_DATA, "callbacks.progress_bar.refresh_rate=0"]


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One preparation cache for the session: the tiny dataset is prepared once."""
    return tmp_path_factory.mktemp("cache")


def run_recsys(argv: list[str]) -> CliResult:
    """Run ``recsys argv`` in this process; returns the exit status and the captured output."""
    from recsys_cli.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    _reset_logging()
    return CliResult(code, out.getvalue(), err.getvalue())


def _reset_logging() -> None:
    """Hydra points the root logger's handlers at the streams of the run that configured it;
    drop them so that a later run (or ``logging.basicConfig`` of ``recsys evaluate``) starts clean."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        with contextlib.suppress(Exception):
            handler.close()


@pytest.fixture
def recsys(cache_dir, tmp_path):
    """``recsys(*argv)``: run the CLI in-process with its cache in the session cache and its runs
    under ``tmp_path/runs``."""

    def run(*argv: str) -> CliResult:
        args = list(argv)
        if args and args[0] == "train":
            args += [f"paths.cache_dir={cache_dir}", f"paths.runs_dir={tmp_path / 'runs'}"]
        return run_recsys(args)

    return run


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch):
    """wandb must never need an account or the network: no credentials, no WANDB_MODE."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "(", ")", "'", "-"] + [
    *"abcdefghijklmnopqrstuvwxyz0123456789",
    *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"],
]


@pytest.fixture(scope="session")
def tiny_language_model(tmp_path_factory) -> Path:
    """A tiny BERT (2 layers, width 16) with a character-level WordPiece tokenizer, saved as a
    Hugging Face folder: the text item code loads it exactly as it loads a real model."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(TINY_VOCAB)})  # transformers 5
    if len(tokenizer) < len(TINY_VOCAB):  # transformers 4 reads the vocabulary from the file
        tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    assert tokenizer.tokenize("toy story") == ["t", "##o", "##y", "s", "##t", "##o", "##r", "##y"]
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(TINY_VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    return folder


def assert_one_error_line(result, *fragments: str) -> str:
    assert result.code == 2, (result.code, result.err[-2000:])
    lines = [line for line in result.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.err[-2000:]
    assert "Traceback" not in result.err and "Traceback" not in result.out
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def tiny_datamodule(tmp_path, *overrides: str):
    """A loaded data module of the tiny config (a count baseline's when ``model=`` is overridden)."""
    from recsys_cli.builders import build_datamodule
    from recsys_cli.compose import compose_train

    baseline = any(o.startswith("model=") for o in overrides)
    cfg = compose_train([*(TINY_BASELINE if baseline else TINY), *overrides, f"paths.run_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"])
    dm = build_datamodule(cfg)
    dm.load()
    return cfg, dm


def sequence_parts(*overrides: str) -> dict:
    """The parts of ``SequenceRecommender`` as ``conf/model/sequential.yaml`` wires them with
    ``overrides`` (e.g. ``"model.user_embedding=true"``, ``"model/latent=vae"``): its ``inputs``,
    ``state``, ``heads`` and ``scoring`` arguments, for a model built in a test."""
    return dict(_sequence_parts(tuple(overrides)))


@functools.cache
def _sequence_parts(overrides: tuple[str, ...]) -> tuple:
    from hydra.utils import instantiate

    from recsys_cli.compose import compose_train

    model = compose_train(list(overrides)).model
    return tuple((key, instantiate(model[key])) for key in ("inputs", "state", "heads", "scoring"))


# the time-window semantics stated directly (brute force): the reference the window starts that
# batches carry (recsys_cli.data.window_features) are checked against; the product never builds it
def window_masks(scales: list, times: torch.Tensor, valid: torch.Tensor, num_positions: int) -> torch.Tensor:
    """Membership of each event in each scale's window (``TimeWindowScale``s), for the last
    ``num_positions`` anchors.

    The semantics of :mod:`recsys_cli.contract.scales` by brute force ([B, S, L, T] booleans): tests
    check the window starts that batches carry (computed once per dataset by
    :mod:`recsys_cli.data.window_features`) against it; training never builds these masks.

    times: [B, T] event times (seconds or positions), valid: [B, T] bool, T = H + L,
    num_positions: L. Returns [B, S, L, T] bool: mask[b, s, i, j] is True when event j is in
    scale s's window anchored at event H + i. Invalid anchors (padding) have an empty row.
    """
    T = times.shape[1]
    H = T - num_positions
    anchor = torch.arange(H, T, device=times.device)  # [L]
    j = torch.arange(T, device=times.device)  # [T]
    back = anchor[:, None] - j[None, :]  # [L, T] how many events before the anchor
    causal = back >= 0
    gap = times[:, H:, None] - times[:, None, :]  # [B, L, T] anchor time - event time
    member = valid[:, None, :] & valid[:, H:, None]  # [B, L, T]
    masks = []
    for scale in scales:
        m = member & causal & (back < scale.max_events)
        if scale.last is not None:
            m = m & (back < scale.last)
        if scale.seconds is not None:
            m = m & (gap <= scale.seconds)
        masks.append(m)
    return torch.stack(masks, dim=1)

