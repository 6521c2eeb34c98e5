"""The synthetic source: deterministic, in the canonical schema, and with its structure really planted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from recsys_cli.data.formats.base import DatasetReader
from recsys_cli.data.synthetic import SyntheticSource
from recsys_cli.data.synthetic_process import category_names
from recsys_cli.errors import ConfigError

SMALL = dict(num_users=300, num_items=400, num_categories=12, days=60, seed=3)


@pytest.fixture(scope="module")
def small():
    return SyntheticSource(**SMALL).generate()


def _session_pairs(dataset, truth):
    """Consecutive (previous, next) item ids inside one session, buys left out."""
    ev = dataset.events
    keep = ev["event_type"].to_numpy() != "buy"
    items = ev["item_id"].to_numpy()[keep]
    sessions = truth.session_id[keep]
    same = sessions[1:] == sessions[:-1]
    return items[:-1][same], items[1:][same]


def _successor_share(transition_prob: float) -> float:
    dataset, truth = SyntheticSource(**{**SMALL, "transition_prob": transition_prob}).generate()
    prev, nxt = _session_pairs(dataset, truth)
    return float((truth.successors[prev] == nxt[:, None]).any(axis=1).mean())


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = SyntheticSource(**SMALL).read()
    b = SyntheticSource(**SMALL).read()
    c = SyntheticSource(**{**SMALL, "seed": 4}).read()
    assert a.events.equals(b.events)
    assert a.items.equals(b.items)
    assert not a.events.equals(c.events)
    assert not a.items.equals(c.items)


def test_schema_ids_and_order(small):
    dataset, _ = small
    ev, items = dataset.events, dataset.items
    assert dataset.name == "synthetic" and dataset.source_files == [] and dataset.has_time
    assert ev.schema == pl.Schema(
        {
            "user_id": pl.Int64,
            "item_id": pl.Int64,
            "timestamp": pl.Datetime("us", "UTC"),
            "event_type": pl.Utf8,
            "category": pl.Utf8,
        }
    )
    assert items.schema == pl.Schema({"item_id": pl.Int64, "title": pl.Utf8, "category": pl.Utf8})
    assert ev.null_count().sum_horizontal().item() == 0
    assert sorted(ev["user_id"].unique().to_list()) == list(range(1, SMALL["num_users"] + 1))
    assert ev["item_id"].min() >= 1 and ev["item_id"].max() <= SMALL["num_items"]
    assert items["item_id"].to_list() == list(range(1, SMALL["num_items"] + 1))
    assert set(ev["event_type"].unique()) == {"view", "cart", "buy"}
    assert set(items["category"]) == set(category_names(SMALL["num_categories"]))
    # sorted by (user_id, timestamp): sorting (stably) changes nothing
    assert ev.sort(["user_id", "timestamp"], maintain_order=True).equals(ev)
    # every event's category is its item's category, and titles name that category
    joined = ev.join(items, on="item_id", how="left", suffix="_item")
    assert (joined["category"] == joined["category_item"]).all()
    assert all(cat in title.split() for title, cat in items.select("title", "category").rows())
    # inside the time span
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert ev["timestamp"].min() >= start
    assert ev["timestamp"].max() < start + timedelta(days=SMALL["days"])


@pytest.mark.parametrize(
    "overrides", [{}, dict(gap_minutes=8.0, min_session_gap_hours=0.6, session_length=10.0)]
)
def test_sessions_are_separated_by_more_than_thirty_minutes(overrides):
    source = SyntheticSource(**{**SMALL, **overrides})
    dataset, truth = source.generate()
    ev = dataset.events
    seconds = ev["timestamp"].dt.epoch("s").to_numpy()
    users = ev["user_id"].to_numpy()
    gap = np.diff(seconds)
    same_user = users[1:] == users[:-1]
    new_session = truth.session_id[1:] != truth.session_id[:-1]
    assert (gap[~new_session] >= 0).all()  # non-decreasing inside a session
    min_gap = source.min_session_gap_hours * 3600 - 1  # whole seconds
    assert gap[same_user & new_session].min() >= min_gap
    # a 30-minute gap marks exactly the session boundaries
    assert np.array_equal(same_user & (gap > 1800), same_user & new_session)
    sizes = np.bincount(truth.session_id)
    assert 0.8 < sizes.mean() / source.session_length < 1.2
    assert sizes.max() <= source.max_session_length + 1  # plus a closing buy


@pytest.mark.parametrize("transition_prob", [0.0, 0.5, 0.9])
def test_successor_transitions_follow_transition_prob(transition_prob):
    share = _successor_share(transition_prob)
    # a popularity draw can hit a successor by chance, so the share is a little above p
    assert transition_prob - 0.03 <= share <= transition_prob + 0.12


def test_successors_stay_in_category(small):
    _, truth = small
    succ = truth.successors[1:]
    own = np.arange(1, succ.shape[0] + 1)
    assert (succ != own[:, None]).all()
    assert (truth.item_category[succ] == truth.item_category[own][:, None]).all()
    assert (np.sort(succ, axis=1)[:, 1:] != np.sort(succ, axis=1)[:, :-1]).all()  # distinct


def test_category_agreement_decays_with_time(small):
    """Session: mostly one intent; a day: the same mission; months: long-term taste above chance."""
    dataset, truth = small
    ev = dataset.events
    seconds = ev["timestamp"].dt.epoch("s").to_numpy()
    users = ev["user_id"].to_numpy()
    cats = ev["category"].to_numpy()
    close = (users[1:] == users[:-1]) & (np.diff(seconds) <= 1800)
    within_30m = (cats[1:] == cats[:-1])[close].mean()

    sessions = (
        ev.with_columns(sid=pl.Series(truth.session_id))
        .group_by("sid", maintain_order=True)
        .agg(pl.col("user_id").first(), pl.col("timestamp").first(), pl.col("category").first())
    )
    pairs = (
        sessions.join(sessions, on="user_id", suffix="_b")
        .filter(pl.col("sid") < pl.col("sid_b"))
        .select(
            days=(pl.col("timestamp_b") - pl.col("timestamp")).dt.total_seconds() / 86400,
            same=pl.col("category") == pl.col("category_b"),
        )
    )
    within_day = pairs.filter(pl.col("days") < 1)["same"].mean()
    months_apart = pairs.filter(pl.col("days") > 30)["same"].mean()
    chance = 1 / SMALL["num_categories"]
    assert within_30m > within_day > months_apart + 0.15
    assert months_apart > chance + 0.1


def test_missions_group_sessions_in_time_and_set_their_intent(small):
    dataset, truth = small
    first = (
        dataset.events.with_columns(sid=pl.Series(truth.session_id))
        .group_by("sid", maintain_order=True)
        .agg(pl.col("user_id").first(), pl.col("timestamp").first().dt.epoch("s"))
    )
    users, start = first["user_id"].to_numpy(), first["timestamp"].to_numpy()
    mission = truth.session_mission
    next_same_user = users[1:] == users[:-1]
    same_mission = (mission[1:] == mission[:-1]) & next_same_user
    other_mission = (mission[1:] != mission[:-1]) & next_same_user
    gap_days = np.diff(start) / 86400
    assert np.median(gap_days[same_mission]) < 0.5 * np.median(gap_days[other_mission])
    assert np.median(gap_days[same_mission]) < 1.0  # bursty: a mission's sessions within a day or so
    intent_is_mission = (truth.session_category == truth.mission_category[mission]).mean()
    assert 0.8 < intent_is_mission < 0.95  # p = 0.85, plus taste / uniform draws that coincide
    event_cat = np.array([truth.categories.index(c) for c in dataset.events["category"].to_list()])
    on_intent = (event_cat == truth.session_category[truth.session_id]).mean()
    source = SyntheticSource(**SMALL)
    assert source.session_focus < on_intent < 0.95  # side browsing leaves the intent


def test_long_term_taste_dominates_user_history(small):
    dataset, truth = small
    sessions = truth.session_category
    users = (
        dataset.events.with_columns(sid=pl.Series(truth.session_id))
        .group_by("sid", maintain_order=True)
        .agg(pl.col("user_id").first())["user_id"]
        .to_numpy()
    )
    in_taste = (truth.favourites[users] == sessions[:, None]).any(axis=1).mean()
    assert in_taste > 0.6  # chance would be at most 4 / 12


def test_buys_mostly_follow_a_cart_in_the_same_session(small):
    dataset, truth = small
    ev = dataset.events.with_columns(sid=pl.Series(truth.session_id)).with_row_index("row")
    carts = ev.filter(pl.col("event_type") == "cart").select("sid", "item_id", cart_row="row")
    buys = ev.filter(pl.col("event_type") == "buy")
    carted_before = (
        buys.join(carts, on=["sid", "item_id"], how="left")
        .group_by("row")
        .agg((pl.col("cart_row") < pl.col("row")).any().alias("carted"))
    )
    shares = ev["event_type"].value_counts(normalize=True)
    view_share = shares.filter(pl.col("event_type") == "view")["proportion"].item()
    assert 0.7 < view_share < 0.95
    assert carted_before["carted"].mean() > 0.6


def test_default_config_size():
    dataset = SyntheticSource().read()
    per_user = dataset.events.height / 2000
    assert 100 <= per_user <= 200
    assert dataset.items.height == 1000


@pytest.mark.parametrize(
    "overrides",
    [
        dict(num_users=50),
        dict(num_users=50, num_items=5, num_categories=5, successors_per_item=3),
        dict(num_users=10, num_items=30, num_categories=1, cart_prob=0.0, days=1),
        dict(num_users=20, num_items=100, num_categories=45, start="2023-06-30T12:00:00Z"),
    ],
)
def test_small_and_edge_configs_work(overrides):
    source = SyntheticSource(**overrides)
    dataset, truth = source.generate()
    ev = dataset.events
    assert ev["user_id"].n_unique() == source.num_users
    assert ev.group_by("user_id").len()["len"].min() >= 2
    assert dataset.items.height == source.num_items
    assert ev["item_id"].max() <= source.num_items
    assert len(truth.session_id) == ev.height
    assert ev.sort(["user_id", "timestamp"], maintain_order=True).equals(ev)


def test_settings_and_fingerprint():
    source = SyntheticSource(num_users=10, seed=1)
    assert isinstance(source, DatasetReader)
    assert source.source_files() == []
    settings = source.settings()
    assert (
        settings["num_users"] == 10 and settings["seed"] == 1 and settings["start"] == "2024-01-01"
    )
    assert all(isinstance(v, (int, float, str)) for v in settings.values())
    assert source.fingerprint() == SyntheticSource(num_users=10, seed=1).fingerprint()
    assert source.fingerprint() != SyntheticSource(num_users=10, seed=2).fingerprint()


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(num_items=5, num_categories=10), "num_items"),
        (dict(transition_prob=1.5), "transition_prob"),
        (dict(min_session_gap_hours=0.25), "min_session_gap_hours"),
        (dict(session_length=0.5), "session_length"),
        (dict(start="yesterday"), "start"),
    ],
)
def test_invalid_settings_are_config_errors(overrides, key):
    with pytest.raises(ConfigError, match=key):
        SyntheticSource(**overrides)
