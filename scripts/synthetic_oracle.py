"""Oracles that know the synthetic log's planted structure: how well can anything do on it?

The generator (:mod:`recsys_cli.data.synthetic`) returns the latent state behind every event: the
session's intent, its mission, the user's long-term taste, item successors and popularity. From
them each oracle scores every item of the catalogue with the probability that it is the user's
next event, ranks the catalogue by it (the ranking that maximises expected NDCG under that
probability) and is evaluated like the models: leave-one-out test (each user's last event,
predicted from all earlier ones), full ranking, seen items kept, NDCG@10, HR@10 and the mean log
probability of the target. Oracles, from most to least informed:

- ``ceiling``: knows the latent state up to event t and also what kind of event comes next
  (the session goes on, its closing buy, or a new session, and then that session's mission).
  No model can know the last two, so no model can beat it.
- ``bayes``: knows the latent state up to event t only; the kind of the next event is a mixture
  with the generator's own probabilities, and a new session stays in the current mission with the
  share measured on the log.
- ``bayes - taste``: without the long-term taste (the population's category frequencies instead):
  what the month/all-history structure is worth to it.
- ``bayes - mission``: without the mission (the current session's intent in its place): what the
  day-scale structure is worth beyond the session.
- ``inferred ...``: the same four states of knowledge about taste and mission, but the session's
  intent is not known: it is inferred (Bayes' rule) from the categories of the session's events so
  far, as a model must. ``inferred - taste - mission`` is an oracle that reads the current session
  perfectly and knows nothing longer; ``inferred`` adds perfect knowledge of the day-scale
  (mission) and month/all-history (taste) structure: their difference is what knowing the
  longer-scale structure exactly adds to a perfect reader of the session.
- ``plug-in: ...``: mission and taste unknown, estimated as the category frequencies of the
  events in one view of the history (shrunk towards the population's mix): the current session;
  the last 50 events (what an encoder with ``max_len=50`` reads); or the last day for the mission
  and all history (newest 200 events) for the taste, as time windows give them. Cruder than
  Bayes' rule but equally crude for each view, so their differences show what windows in time
  can add over a fixed number of recent events on a given log.

Ties are broken in the target's favour (an upper bound). Users and test events as in
``recsys train`` on this log (duplicates dropped, users with fewer than ``min_user_events`` events
dropped; items are not filtered: on the default log every item has dozens of events).
Command line: ``python scripts/synthetic_ceiling.py``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys_cli.data.synthetic import SyntheticSource
from recsys_cli.data.synthetic_process import (
    MISSION_FROM_TASTE,
    SESSION_FROM_MISSION,
    SESSION_FROM_TASTE,
    SIDE_FROM_MISSION,
)

ORACLES = (
    "ceiling",
    "bayes",
    "bayes - taste",
    "bayes - mission",
    "inferred",
    "inferred - taste",
    "inferred - mission",
    "inferred - taste - mission",
    "plug-in: session",
    "plug-in: last 50 events",
    "plug-in: day + all history",
)
PLUG_IN_PRIOR = 2.0  # pseudo-events of the population's category mix in a plug-in estimate
DAY_US = 86_400_000_000
RECENT_EVENTS = 50  # what an encoder with the default max_len reads
ALL_HISTORY_EVENTS = 200  # the newest events the default all-history scale sees


def leave_one_out_cases(events: pl.DataFrame, min_user_events: int) -> pl.DataFrame:
    """Row indices (into the generated log) of each kept user's anchor (second-last) and target."""
    rows = (
        events.with_row_index("row")
        .unique(
            ["user_id", "item_id", "timestamp", "event_type"], keep="first", maintain_order=True
        )
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("row"))
        .filter(pl.col("row").list.len() >= min_user_events)
    )
    return rows.select(
        "user_id",
        pl.col("row").list.get(-2).alias("anchor"),
        pl.col("row").list.get(-1).alias("target"),
        pl.col("row").alias("history"),
    )


def evaluate_oracles(source: SyntheticSource, min_user_events: int = 5) -> dict:
    """``{"users", "stay", "kinds", "oracles": {name: {"ndcg@10", "hr@10", "loglik"}}}`` for a
    :class:`~recsys_cli.data.synthetic.SyntheticSource`. ``kinds``: the shares of test targets that
    go on the anchor's session, close it with a buy, or open a new session."""
    raw, truth = source.generate()
    events = raw.events
    cases = leave_one_out_cases(events, min_user_events)
    item_ids = events["item_id"].to_numpy()
    times = events["timestamp"].dt.epoch("us").to_numpy()

    n_items, n_cats = truth.item_category.size - 1, len(truth.categories)
    item_cat = truth.item_category  # [N + 1], -1 at 0
    pop = truth.popularity  # [N + 1]
    cat_index = np.maximum(item_cat, 0)
    ev_type = events["event_type"].to_numpy()
    sess = truth.session_id
    mis_cat = truth.mission_category
    focus, tp = source.session_focus, source.transition_prob
    # share of consecutive sessions of a user that belong to the same mission
    users_of_session = events["user_id"].to_numpy()[np.unique(sess, return_index=True)[1]]
    same_user = users_of_session[1:] == users_of_session[:-1]
    stay = float((truth.session_mission[1:] == truth.session_mission[:-1])[same_user].mean())
    population = np.bincount(truth.session_category, minlength=n_cats) / truth.session_category.size

    def onehot(c: int) -> np.ndarray:
        v = np.zeros(n_cats)
        v[c] = 1.0
        return v

    def items_from(cat_prob: np.ndarray) -> np.ndarray:
        p = cat_prob[cat_index] * pop
        p[0] = 0.0
        return p

    def event_categories(intent: np.ndarray, mission: np.ndarray, taste: np.ndarray) -> np.ndarray:
        side = SIDE_FROM_MISSION * mission + (1 - SIDE_FROM_MISSION) * taste
        return focus * intent + (1 - focus) * side

    def intent_prior(mission: np.ndarray, taste: np.ndarray) -> np.ndarray:
        """A new session's intent: its mission's category, a taste draw, or any category."""
        rest = (1 - SESSION_FROM_MISSION - SESSION_FROM_TASTE) / n_cats
        return SESSION_FROM_MISSION * mission + SESSION_FROM_TASTE * taste + rest

    def new_session(mission: np.ndarray, taste: np.ndarray) -> np.ndarray:
        return items_from(event_categories(intent_prior(mission, taste), mission, taste))

    p_continue = 1.0 - 1.0 / source.session_length
    ndcg: dict[str, list[float]] = {name: [] for name in ORACLES}
    hr: dict[str, list[float]] = {name: [] for name in ORACLES}
    loglik: dict[str, list[float]] = {name: [] for name in ORACLES}
    kinds = np.zeros(3)

    def oracle_scores(user: int, a: int, t: int, history: list[int]) -> dict[str, np.ndarray]:
        """Each oracle's probability of every item being event ``t``, from the anchor ``a``."""
        s = sess[a]
        fav, w = truth.favourites[user], truth.taste[user]
        taste = np.zeros(n_cats)
        np.add.at(taste, fav[fav >= 0], w[fav >= 0])
        seen = history[:-1]  # the user's events up to the anchor (the last one is the target)
        session_rows = [r for r in seen if sess[r] == s]
        carts = [r for r in session_rows if ev_type[r] == "cart"]
        position = len(session_rows) - 1 - int(truth.closing_buy[a])
        buy = np.zeros(n_items + 1)
        if carts:
            buy[item_ids[carts[-1]]] = 1.0
        succ = np.zeros(n_items + 1)
        np.add.at(succ, truth.successors[item_ids[a]], 1.0 / truth.successors.shape[1])

        session_cats = [item_cat[item_ids[r]] for r in session_rows if not truth.closing_buy[r]]

        def plug_in(rows: list[int]) -> np.ndarray:
            """Category frequencies of the given events, shrunk towards the population's."""
            rows = [r for r in rows if not truth.closing_buy[r]]
            counts = np.bincount(item_cat[item_ids[rows]], minlength=n_cats).astype(float)
            return (counts + PLUG_IN_PRIOR * population) / (len(rows) + PLUG_IN_PRIOR)

        def inferred_intent(taste_v: np.ndarray, mission_v: np.ndarray) -> np.ndarray:
            """Posterior of the session intent given the categories of its events so far."""
            post = intent_prior(mission_v, taste_v)
            side = event_categories(np.zeros(n_cats), mission_v, taste_v)  # off-intent share
            for c in session_cats:  # P(category c | intent) for every intent
                post = post * (focus * onehot(c) + side[c])
            return post / post.sum()

        def mixture(
            taste_v: np.ndarray, mission_v: np.ndarray, intent: np.ndarray | None = None
        ) -> np.ndarray:
            if intent is None:
                intent = onehot(truth.session_category[s])
            go_on = tp * succ + (1 - tp) * items_from(event_categories(intent, mission_v, taste_v))
            other_mission = MISSION_FROM_TASTE * taste_v + (1 - MISSION_FROM_TASTE) / n_cats
            nxt = stay * new_session(mission_v, taste_v) + (1 - stay) * new_session(
                other_mission, taste_v
            )
            if truth.closing_buy[a]:
                return nxt
            cont = p_continue if position + 1 < source.max_session_length else 0.0
            end_buy = (1 - cont) * (source.buy_prob if carts else 0.0)
            return cont * go_on + end_buy * buy + (1 - cont - end_buy) * nxt

        mission = onehot(mis_cat[truth.session_mission[s]])
        if sess[t] != s:
            exact = new_session(onehot(mis_cat[truth.session_mission[sess[t]]]), taste)
        elif truth.closing_buy[t]:
            exact = buy
        else:
            intent = onehot(truth.session_category[s])
            exact = tp * succ + (1 - tp) * items_from(event_categories(intent, mission, taste))
        scores = {
            "ceiling": exact,
            "bayes": mixture(taste, mission),
            "bayes - taste": mixture(population, mission),
            "bayes - mission": mixture(taste, onehot(truth.session_category[s])),
            "inferred": mixture(taste, mission, inferred_intent(taste, mission)),
            "inferred - taste": mixture(population, mission, inferred_intent(population, mission)),
            "inferred - mission": mixture(taste, population, inferred_intent(taste, population)),
            "inferred - taste - mission": mixture(
                population, population, inferred_intent(population, population)
            ),
        }
        # taste and mission estimated from the categories inside a view of the history
        day = [r for r in seen if times[a] - times[r] <= DAY_US]
        for name, (mission_v, taste_v) in {
            "plug-in: session": (plug_in(session_rows),) * 2,
            "plug-in: last 50 events": (plug_in(seen[-RECENT_EVENTS:]),) * 2,
            "plug-in: day + all history": (plug_in(day), plug_in(seen[-ALL_HISTORY_EVENTS:])),
        }.items():
            scores[name] = mixture(taste_v, mission_v, inferred_intent(taste_v, mission_v))
        return scores

    for user, a, t, history in cases.iter_rows():
        scores = oracle_scores(user, a, t, history)
        s = sess[a]
        target = item_ids[t]
        kinds[0 if sess[t] == s and not truth.closing_buy[t] else 1 if sess[t] == s else 2] += 1
        for name, p in scores.items():
            p = p.copy()
            p[0] = -1.0
            rank = int((p > p[target]).sum())  # ties in the target's favour: an upper bound
            ndcg[name].append(1.0 / np.log2(rank + 2) if rank < 10 else 0.0)
            hr[name].append(float(rank < 10))
            loglik[name].append(float(np.log(max(p[target], 1e-12))))

    return {
        "users": cases.height,
        "stay": stay,
        "kinds": (kinds / max(kinds.sum(), 1)).tolist(),
        "oracles": {
            name: {
                "ndcg@10": float(np.mean(ndcg[name])),
                "hr@10": float(np.mean(hr[name])),
                "loglik": float(np.mean(loglik[name])),
            }
            for name in ORACLES
        },
    }
