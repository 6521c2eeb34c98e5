"""The item-to-item nearest-neighbour baseline (``model=item_knn``): cosine similarities against a
case computed by hand, top-``neighbours`` truncation, blockwise fitting, query scoring by hand,
checkpoint round trip, config checks and one run of the command on the tiny synthetic data."""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest
import torch
from conftest import TINY_BASELINE, run_recsys

from recsys_cli.checks import validate_config
from recsys_cli.compose import compose_train
from recsys_cli.contract import DataSpec, ScaleSet
from recsys_cli.errors import ConfigError
from recsys_cli.models.neighbours import ItemKNN

# 4 users, 5 items (item 5 has no training event); user 3 has item 4 twice
TINY_USERS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3])
TINY_ITEMS = np.array([1, 2, 3, 1, 2, 2, 3, 4, 4, 1, 4])
# the users of each item, read off the events above
USERS_OF = {1: {0, 1, 3}, 2: {0, 1, 2}, 3: {0, 2}, 4: {2, 3}, 5: set()}
# training events per item (repeats count): 3, 3, 2, 3, 0 -> divided by the largest
POPULARITY = [0.0, 1.0, 1.0, 2 / 3, 1.0, 0.0]


def by_hand(shrink: float = 0.0) -> np.ndarray:
    """sim(i, j) = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrink), i != j, as a [6, 6] table."""
    table = np.zeros((6, 6))
    for i, users_i in USERS_OF.items():
        for j, users_j in USERS_OF.items():
            if i != j and users_i & users_j:
                table[i, j] = len(users_i & users_j) / (
                    math.sqrt(len(users_i) * len(users_j)) + shrink
                )
    return table


def sim(i: int, j: int) -> float:
    return by_hand()[i, j]


def spec(num_items: int = 5, num_users: int = 4) -> DataSpec:
    return DataSpec(num_items=num_items, num_users=num_users, max_len=5, scales=ScaleSet())


def fitted(**kwargs) -> ItemKNN:
    model = ItemKNN(spec(), **kwargs)
    model.fit(TINY_ITEMS, TINY_USERS)
    return model


def dense(model: ItemKNN) -> np.ndarray:
    """The stored similarities as a dense [N + 1, N + 1] matrix (row: item, column: neighbour)."""
    n = model.num_items + 1
    rows = torch.repeat_interleave(torch.arange(n), torch.diff(model.crow))
    table = torch.zeros(n, n, dtype=torch.float64)
    table[rows, model.col] = model.val.double()
    return table.numpy()


def test_similarities_are_the_cosine_computed_by_hand():
    table = dense(fitted())
    np.testing.assert_allclose(table, by_hand(), atol=1e-7)
    # the same numbers written out: 1 and 2 share users 0 and 1 of 3 each, ...
    assert table[1, 2] == pytest.approx(2 / 3) and table[2, 3] == pytest.approx(2 / math.sqrt(6))
    assert table[3, 4] == pytest.approx(1 / 2) and table[1, 4] == pytest.approx(1 / math.sqrt(6))
    assert table[1, 1] == 0 and not table[5].any() and not table[:, 5].any()
    # shrink in the denominator: sim(1, 2) = 2 / (sqrt(3 * 3) + 1)
    shrunk = dense(fitted(shrink=1.0))
    assert shrunk[1, 2] == pytest.approx(2 / 4) and shrunk[3, 4] == pytest.approx(1 / 3)
    np.testing.assert_allclose(shrunk, by_hand(1.0), atol=1e-7)


def test_only_the_most_similar_neighbours_are_kept():
    table = dense(fitted(neighbours=2))
    # item 1: 2 (2/3), then 3 and 4 tie at 1/sqrt(6): the smaller index is kept
    kept = {i: set(np.flatnonzero(table[i])) for i in range(1, 6)}
    assert kept == {1: {2, 3}, 2: {3, 1}, 3: {2, 4}, 4: {3, 1}, 5: set()}
    for i, neighbours in kept.items():
        for j in neighbours:
            assert table[i, j] == pytest.approx(by_hand()[i, j])
    one = dense(fitted(neighbours=1))
    assert [int(np.argmax(one[i])) for i in range(1, 5)] == [2, 3, 2, 3]
    assert (one > 0).sum() == 4


@pytest.mark.parametrize("block_entries", [1, 7, 40])
def test_blockwise_fitting_equals_one_block(block_entries):
    rng = np.random.default_rng(0)
    users = np.sort(rng.integers(0, 25, 400))
    items = rng.integers(1, 31, 400)
    whole = ItemKNN(spec(30, 25), neighbours=6)
    whole.fit(items, users)
    blocks = ItemKNN(spec(30, 25), neighbours=6, block_entries=block_entries)
    blocks.fit(items, users)
    assert torch.equal(whole.crow, blocks.crow) and torch.equal(whole.col, blocks.col)
    assert torch.equal(whole.val, blocks.val)
    # and without truncation both are the dense cosine of the binary user x item matrix
    full = ItemKNN(spec(30, 25), neighbours=30, block_entries=block_entries)
    full.fit(items, users)
    X = np.zeros((25, 31))
    X[users, items] = 1
    counts = X.T @ X
    norm = np.sqrt(np.outer(X.sum(0), X.sum(0)))
    cosine = np.divide(counts, norm, out=np.zeros_like(counts), where=norm > 0)
    np.fill_diagonal(cosine, 0)
    np.testing.assert_allclose(dense(full), cosine, atol=1e-6)
    assert (torch.diff(whole.crow) <= 6).all() and (torch.diff(whole.crow) == 6).any()


def scores_of(model: ItemKNN, *rows: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model({"items": torch.tensor(rows)}).scores


def test_scores_are_the_weighted_sum_of_the_query_neighbours():
    model = fitted(query_len=3, decay=0.5, popularity_weight=0.01)
    scores = scores_of(model, [0, 0, 1, 3, 2], [0, 0, 0, 3, 2], [0, 2, 3, 2, 3], [4, 1, 1, 2, 3])
    assert scores.shape == (4, 6)
    expected = [
        # 1 (age 2, weight 0.25), 3 (age 1, 0.5), 2 (age 0, 1); the oldest event is out of the query
        [0.25 * sim(1, j) + 0.5 * sim(3, j) + sim(2, j) for j in range(1, 6)],
        # padding inside the query adds nothing
        [0.5 * sim(3, j) + sim(2, j) for j in range(1, 6)],
        # a repeated item counts once, with the weight of its newest occurrence (3: 1, 2: 0.5)
        [sim(3, j) + 0.5 * sim(2, j) for j in range(1, 6)],
        # item 4 is older than the query
        [0.25 * sim(1, j) + 0.5 * sim(2, j) + sim(3, j) for j in range(1, 6)],
    ]
    for row, values in enumerate(expected):
        for j, value in enumerate(values, start=1):
            assert scores[row, j].item() == pytest.approx(value + 0.01 * POPULARITY[j], abs=1e-6), (
                row,
                j,
            )


def test_padding_and_column_zero():
    model = fitted(query_len=5)
    scores = scores_of(model, [0, 0, 0, 0, 3], [0, 0, 0, 0, 0], [3, 3, 3, 3, 3])
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    # only item 3 is in the query: its similarities, popularity to break ties
    np.testing.assert_allclose(
        scores[0, 1:].numpy(), by_hand()[3, 1:] + 1e-6 * np.array(POPULARITY[1:]), atol=1e-7
    )
    # an empty memory: popularity alone (item 5, never trained, last)
    np.testing.assert_allclose(scores[1, 1:].numpy(), 1e-6 * np.array(POPULARITY[1:]), atol=1e-9)
    assert torch.equal(scores[0], scores[2])  # item 3 five times counts once
    # query_len=1: the newest event only
    last = scores_of(fitted(), [0, 0, 1, 4, 3])
    np.testing.assert_allclose(last[0, 1:].numpy(), scores[0, 1:].numpy(), atol=1e-7)
    # decay 0: the same (older events weigh 0 ** age = 0)
    zero = scores_of(fitted(query_len=5, decay=0.0), [0, 0, 1, 4, 3])
    np.testing.assert_allclose(zero[0, 1:].numpy(), scores[0, 1:].numpy(), atol=1e-7)


def test_a_state_dict_round_trip_into_a_fresh_model_gives_the_same_scores():
    model = fitted(query_len=3, decay=0.7)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = ItemKNN(spec(), query_len=3, decay=0.7)
    assert fresh.col.numel() != model.col.numel() and fresh.val.numel() != model.val.numel()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    rows = [[0, 0, 1, 3, 2], [0, 0, 0, 0, 4], [0, 0, 0, 0, 0]]
    assert torch.equal(scores_of(fresh, *rows), scores_of(model, *rows))
    assert not torch.equal(
        scores_of(ItemKNN(spec(), query_len=3, decay=0.7), *rows), scores_of(model, *rows)
    )


def test_the_config_values_are_checked():
    validate_config(compose_train(["model=item_knn", "trainer.max_epochs=0"]))
    for override, message in [
        ("model.neighbours=0", "model.neighbours=0: use an integer >= 1"),
        ("model.query_len=0", "model.query_len=0: use an integer >= 1"),
        ("model.decay=1.5", "model.decay=1.5: use a number in [0, 1]"),
        ("model.shrink=-1.0", "model.shrink=-1.0: use a number >= 0"),
    ]:
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            validate_config(compose_train(["model=item_knn", override]))


def test_train_and_evaluate_end_to_end(recsys, tmp_path):
    run_dir = tmp_path / "run"
    result = recsys(
        "train", *TINY_BASELINE, "model=item_knn", "model.query_len=3", f"hydra.run.dir={run_dir}"
    )
    assert result.code == 0, result.err[-3000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["status"] == "ok" and report["epochs"] == 0
    for split in ("val", "test"):
        overall = {name: value for name, value in report[split].items() if "/" not in name}
        assert {"hr@10", "ndcg@10"} <= set(overall)
        for name, value in overall.items():
            assert math.isfinite(value) and 0.0 <= value <= 1.0, (split, name, value)
    # the checkpoint alone reproduces the test metrics (the sparse buffers load at their size)
    evaluated = run_recsys(["evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}"])
    assert evaluated.code == 0, evaluated.err[-3000:]
    files = sorted((run_dir / "evaluations").glob("*.json"))
    again = json.loads(files[-1].read_text())["results"]["all scales"]
    for name, value in report["test"].items():
        assert again[name] == pytest.approx(value, abs=1e-6), name
