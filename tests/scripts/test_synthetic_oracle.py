"""The planted-structure oracles: exact where they know everything, ordered by what they know."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from conftest import REPO

from recsys_cli.data.synthetic import SyntheticSource

SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))  # the oracles live next to the script that reports them

from synthetic_oracle import ORACLES, evaluate_oracles  # noqa: E402

SMALL = dict(num_users=400, num_items=400, num_categories=12, days=60, seed=3)


@pytest.fixture(scope="module")
def generated():
    return SyntheticSource(**SMALL).generate()


def test_popularity_is_a_distribution_inside_every_category(generated):
    _, truth = generated
    pop, cat = truth.popularity, truth.item_category
    assert pop[0] == 0 and (pop[1:] > 0).all()
    sums = np.bincount(cat[1:], weights=pop[1:], minlength=len(truth.categories))
    np.testing.assert_allclose(sums, 1.0)


def test_popularity_matches_the_items_drawn_at_session_starts(generated):
    # the first event of a session is never a successor transition: a popularity draw
    dataset, truth = generated
    items = dataset.events["item_id"].to_numpy()
    first = np.flatnonzero(np.r_[True, truth.session_id[1:] != truth.session_id[:-1]])
    counts = np.bincount(items[first], minlength=truth.popularity.size).astype(float)
    top = np.argsort(-truth.popularity)[:20]
    rest = np.argsort(-truth.popularity)[-200:]
    assert counts[top].mean() > 5 * counts[rest].mean()


def test_closing_buys_repeat_the_last_cart_of_their_session(generated):
    dataset, truth = generated
    ev_type = dataset.events["event_type"].to_numpy()
    items = dataset.events["item_id"].to_numpy()
    rows = np.flatnonzero(truth.closing_buy)
    assert rows.size > 20
    assert (ev_type[rows] == "buy").all()
    last_of_session = np.r_[truth.session_id[1:] != truth.session_id[:-1], True]
    assert last_of_session[rows].all()
    for r in rows[:50]:
        session = np.flatnonzero(truth.session_id == truth.session_id[r])
        carts = session[ev_type[session] == "cart"]
        assert carts.size and items[carts[-1]] == items[r]


def test_oracles_are_ordered_by_what_they_know():
    result = evaluate_oracles(SyntheticSource(**SMALL), min_user_events=5)
    o = result["oracles"]
    assert set(o) == set(ORACLES)
    assert result["users"] == SMALL["num_users"]
    assert sum(result["kinds"]) == pytest.approx(1.0)
    # knowing the kind of the next event beats every other oracle
    assert all(o["ceiling"]["ndcg@10"] >= m["ndcg@10"] for m in o.values())
    assert o["ceiling"]["loglik"] > o["bayes"]["loglik"]
    # it knows when the session closes with a buy, and which item that is: NDCG 1 on those
    assert o["ceiling"]["ndcg@10"] >= result["kinds"][1]
    # the session's intent, the mission and the taste each carry information about the target
    assert o["bayes"]["loglik"] > o["inferred"]["loglik"]
    assert o["inferred"]["loglik"] > o["inferred - taste"]["loglik"]
    assert o["inferred"]["loglik"] > o["inferred - mission"]["loglik"]
    assert o["inferred - mission"]["loglik"] > o["inferred - taste - mission"]["loglik"]
    assert o["inferred"]["hr@10"] > o["inferred - taste - mission"]["hr@10"]
    # estimates from the observed categories: below the known state, better from more history
    for name in ("plug-in: session", "plug-in: last 50 events", "plug-in: day + all history"):
        assert o[name]["loglik"] < o["inferred"]["loglik"]
        assert 10 / SMALL["num_items"] < o[name]["hr@10"] <= o["ceiling"]["hr@10"]
    assert o["plug-in: session"]["loglik"] < o["plug-in: day + all history"]["loglik"]


def test_the_grid_script_reports_one_row_per_combination(capsys):
    path = REPO / "scripts" / "synthetic_ceiling.py"
    spec = importlib.util.spec_from_file_location("synthetic_ceiling", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.grid(["data.reader.num_users=300", "data.reader.session_focus=0.3,0.9", "data.reader.buy_prob=0"])
    lines = capsys.readouterr().out.strip().splitlines()
    header, rows = lines[0].split(" | "), [line.strip("| ").split(" | ") for line in lines[2:]]
    assert header[:3] == ["| num_users", "session_focus", "buy_prob"] and len(rows) == 2
    assert [row[1] for row in rows] == ["0.3", "0.9"]
    for row in rows:
        session_only, taste, mission, both = (float(v) for v in row[3:7])
        assert 0 < session_only < 1 and 0 < both < 1
        # the gain of knowing both latents over the better one alone (from 4-decimal cells)
        assert float(row[7].rstrip("%")) / 100 == pytest.approx(both / max(taste, mission) - 1, abs=2e-3)
