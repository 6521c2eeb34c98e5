"""``recsys recommend``: the top-K of a run's users and of ad-hoc histories.

The recommended list of a history equals the model's own evaluation ranking of the same case (for
a plain and a multi-scale model: the window features of a query are evaluation's), its hit rate
equals the evaluation's, an ad-hoc history equals the same user's whole-history query, unknown ids
are one line each, and every mistake is one error line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import TINY, assert_one_error_line, run_recsys

from recsys_cli.contract.batch import eval_targets
from recsys_cli.data.queries import query_cases, whole_history_cases
from recsys_cli.recommend import rank_top_k, score_cases
from recsys_cli.runs import load_run
from recsys_cli.training.ranking import mask_seen, target_ranks

CPU = torch.device("cpu")
MODELS = {
    "plain": ["scales=none"],
    "multiscale": ["scales=session_day_month_all"],
    "cloze": ["task=cloze", "model/encoder=bert", "scales=none"],  # its query ends in a [MASK] slot
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir) -> dict[str, Path]:
    """A plain, a multi-scale and a cloze tiny run (two epochs each): their best checkpoints."""
    found = {}
    for name, overrides in MODELS.items():
        run_dir = tmp_path_factory.mktemp(name) / "run"
        result = run_recsys(["train", *TINY, *overrides, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"])
        assert result.code == 0, result.err[-3000:]
        found[name] = run_dir / "checkpoints" / "best.ckpt"
    return found


@pytest.fixture(scope="module")
def loaded(runs) -> dict:
    """Each run rebuilt from its checkpoint once (what the command does), for the checks."""
    return {name: load_run(str(ckpt), []) for name, ckpt in runs.items()}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("filter_seen", [True, False])
def test_recommendations_equal_the_evaluation_ranking_of_the_same_cases(model, filter_seen, runs, loaded):
    """Queries ending at the test targets give, for every test case, the top-K evaluation ranks:
    the target sits at its evaluation rank in the list (or is absent when ranked below K)."""
    run = loaded[model]
    dm, k = run.dm, 10
    targets = dm.split.test_targets
    queries, cases = query_cases(dm, targets), dm.eval_cases("test")
    assert run.module.model.pooling is not None if model == "multiscale" else run.module.model.pooling is None
    hits = 0
    for start in range(0, len(targets), 16):
        ids = np.arange(start, min(start + 16, len(targets)))
        query, case = queries[ids], cases[ids]
        assert "targets" not in query and set(query) == set(case) - {"targets", "target_types", "target_times", "case"}
        scores, items = score_cases(run, query, filter_seen, k, CPU)
        with torch.no_grad():  # evaluation's own path: its batch, its masking, its ranks
            full = run.module.model(case, None, last_only=True).last_scores().clone()
        full = mask_seen(full, case["seen"]) if filter_seen else full
        full[:, 0] = float("-inf")
        ranks = target_ranks(full, eval_targets(case))
        expected_scores, expected_items = rank_top_k(full, k)
        assert torch.equal(items, expected_items)
        torch.testing.assert_close(scores, expected_scores, rtol=1e-5, atol=1e-5)
        for row, (rank, target) in enumerate(zip(ranks.tolist(), eval_targets(case).tolist(), strict=True)):
            listed = items[row].tolist()
            assert (listed.index(target) if target in listed else k) == min(rank, k)
        hits += int((ranks < k).sum())
    if filter_seen == run.module.filter_seen:  # the run's own setting: training's reported hit rate
        reported = json.loads((runs[model].parent.parent / "metrics.json").read_text())["test"]["hr@10"]
        assert hits / len(targets) == pytest.approx(reported, abs=1e-6)


def read_recs(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path).sort(["user_id", "rank"])


def test_recommend_writes_every_users_top_k(runs, loaded, tmp_path):
    ckpt = runs["multiscale"]
    out = tmp_path / "recs.parquet"
    result = run_recsys(["recommend", f"ckpt={ckpt}", "k=5", f"output={out}", "filter_seen=true", "batch_size=7"])
    assert result.code == 0, result.err[-2000:]
    assert "Wrote 300 rows for 60 users" in result.out
    recs = read_recs(out)
    assert recs.columns == ["user_id", "rank", "item_id", "title", "score"]
    run = loaded["multiscale"]
    assert set(recs["user_id"]) == set(run.user_vocab) and recs.height == 60 * 5
    for user, rows in recs.group_by("user_id"):
        u = run.user_vocab.index(user[0])
        assert rows["rank"].to_list() == [1, 2, 3, 4, 5]
        history = {run.item_vocab[i - 1] for i in run.data.items[run.data.offsets[u] : run.data.offsets[u + 1]]}
        assert not history & set(rows["item_id"])  # seen items filtered
        assert rows["score"].to_list() == sorted(rows["score"].to_list(), reverse=True)
    # one user's rows are the model's top-5 of that user's whole history, scored alone
    u = 3
    scores, items = score_cases(run, whole_history_cases(run.dm, np.array([u]))[np.array([0])], True, 5, CPU)
    rows = recs.filter(pl.col("user_id") == run.user_vocab[u])
    assert rows["item_id"].to_list() == [run.item_vocab[i - 1] for i in items[0].tolist()]
    assert rows["title"].to_list() == [run.data.item_titles[i - 1] for i in items[0].tolist()]
    np.testing.assert_allclose(rows["score"].to_numpy(), scores[0].numpy(), rtol=1e-5, atol=1e-5)
    # never replaced by accident
    again = run_recsys(["recommend", f"ckpt={ckpt}", "k=5", f"output={out}"])
    assert_one_error_line(again, f"output={out} exists", "overwrite=true")


def test_listed_users_skip_unknown_ids_one_line_each(runs, loaded, tmp_path):
    ckpt, run = runs["plain"], loaded["plain"]
    wanted = run.user_vocab[:2]
    listing = tmp_path / "users.txt"
    listing.write_text("\n".join([wanted[0], "nobody", wanted[1], "ghost"]) + "\n")
    for users in (str(listing), f"[{wanted[0]},nobody,{wanted[1]},ghost]"):
        out = tmp_path / f"recs-{len(users)}.parquet"
        result = run_recsys(["recommend", f"ckpt={ckpt}", f"users={users}", "k=3", f"output={out}"])
        assert result.code == 0, result.err[-2000:]
        assert "Unknown user id 'nobody': not in the run's data, skipped" in result.err
        assert "Unknown user id 'ghost'" in result.err and "Skipped 2 of 4 user ids (unknown)" in result.err
        assert "Traceback" not in result.err
        assert sorted(set(read_recs(out)["user_id"])) == sorted(wanted)


@pytest.mark.parametrize("model", list(MODELS))
def test_an_adhoc_history_equals_the_same_users_whole_history(model, runs, loaded):
    """A user's events given by hand (raw ids, times, type names), with unknown ids among them,
    give that user's recommendations: the window features are computed as evaluation's."""
    ckpt, run = runs[model], loaded[model]
    data, u = run.data, 5
    span = slice(data.offsets[u], data.offsets[u + 1])
    items = [run.item_vocab[i - 1] for i in data.items[span]]
    times = data.times[span].tolist()
    types = [str(data.event_type_vocab[t - 1]) for t in data.event_types[span]]
    history = [*items[:2], "no-such-item", *items[2:]]
    times, types = [*times[:2], times[2], *times[2:]], [*types[:2], types[2], *types[2:]]
    result = run_recsys(["recommend", f"ckpt={ckpt}", "k=6", f"history=[{','.join(history)}]",
                         f"times=[{','.join(map(str, times))}]", f"event_types=[{','.join(types)}]"])  # fmt: skip
    assert result.code == 0, result.err[-2000:]
    assert "Unknown item id 'no-such-item': not in the run's data, skipped" in result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert [row["rank"] for row in lines] == [1, 2, 3, 4, 5, 6]
    scores, best = score_cases(run, whole_history_cases(run.dm, np.array([u]))[np.array([0])], run.module.filter_seen, 6, CPU)
    assert [row["item_id"] for row in lines] == [run.item_vocab[i - 1] for i in best[0].tolist()]
    np.testing.assert_allclose([row["score"] for row in lines], scores[0].numpy(), atol=1e-5)
    # without times and types: defaults, each said once
    result = run_recsys(["recommend", f"ckpt={ckpt}", "k=3", f"history=[{','.join(items[:4])}]"])
    assert result.code == 0 and len(result.out.splitlines()) == 3
    assert "Note: times not given" in result.err


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["history=[1,2]", "users=[1]"], ["users=", "history=", "not both"]),
        (["k=0"], ["k=0", "at least one"]),
        (["k=many"], ["k='many'", "integer"]),
        (["times=[1,2]"], ["times=", "history="]),
        (["history=[nope,nada]"], ["none of the 2 items of history"]),
        (["history=[1,2]", "times=[5]"], ["times has 1 values for 2 items"]),
        (["history=[1,2]", "event_types=[view,teleport]"], ["event_types", "teleport", "view"]),
        (["users=[nobody]"], ["none of the 1 user ids"]),
        (["users=/no/such/users.txt"], ["users=/no/such/users.txt", "no such file"]),
        (["filter_seen=maybe"], ["filter_seen='maybe'"]),
        (["model.dim=8"], ["weights do not fit"]),
    ],
)
def test_bad_recommend_input_is_one_error_line(argv, fragments, runs):
    assert_one_error_line(run_recsys(["recommend", f"ckpt={runs['plain']}", *argv]), *fragments)


def test_recommend_needs_a_checkpoint():
    assert_one_error_line(run_recsys(["recommend", "k=5"]), "recsys recommend needs ckpt=", "ckpt=PATH")
