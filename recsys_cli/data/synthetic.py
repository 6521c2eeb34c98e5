"""A seeded synthetic event log with known structure at several time scales.

:class:`SyntheticSource` is a :class:`~recsys_cli.data.formats.base.DatasetReader` that needs no
files: it generates a shop-like behaviour log (views, carts, buys) in which each time scale of the
multi-scale model has something real to find, so that tests and demos can check that a scale helps
exactly where it should.

Generative process (all randomness from one ``numpy.random.default_rng(seed)``):

1. Items. Item ``i`` gets one of ``num_categories`` categories (equal-sized, shuffled) and a
   within-category popularity weight ``rank ** -zipf_exponent`` (random rank inside the category).
   Each category's items also form a random cycle, a series (independent of popularity); an item's
   ``successors_per_item`` successors are the next items along it (fewer distinct ones only when
   the category is too small). Titles are ``"<Adjective> <category> <noun> <id>"`` with nouns
   from a per-category word list, so item text carries the category. The items table (``title``,
   ``category``) gives the prepared data's ``item_fields``.
2. Users. Long-term taste: 2-4 distinct favourite categories with Dirichlet(1) weights, fixed for the
   whole span. Activity: a mean-one lognormal multiplier (``activity_sigma``); the number of sessions
   is ``max(2, Poisson(sessions_per_user * multiplier))``.
3. Sessions in time. Session sizes are geometric with mean ``session_length`` (capped at
   ``max_session_length``); gaps between events of a session are exponential with mean
   ``gap_minutes`` (capped at 20 minutes), so a session lasts a few minutes. Every gap between the
   end of one session and the start of the next is at least ``min_session_gap_hours`` (default one
   hour). Hence a 30-minute window anchored at an event never reaches into an earlier session, and
   a gap of more than 30 minutes between consecutive events of a user is always a session boundary.
4. Missions: interests that last a day or a few. A user's sessions are shared out uniformly at
   random among ``max(1, Poisson(sessions / sessions_per_mission))`` missions (so missions differ
   in size). A mission has a category (the long-term taste with probability 0.5, else any
   category) and a centre in time (stratified: mission k of n is uniform in the k-th n-th of the
   ``days``); its sessions lie around the centre with a normal spread of ``mission_days`` days
   (reflected at the ends of the span), so shopping is bursty: a few sessions within a day or two
   about one thing, then a quiet spell, then another mission. (Session start times are the sorted
   positions, mapped onto the time left free by the sessions and their minimum gaps.)
5. Session intent (a category): the session's mission category (p=0.85), a draw from the
   long-term taste (p=0.1), or a uniform category (p=0.05).
6. Items in a session. An event's category is the session intent with probability
   ``session_focus``, else side browsing: the mission's category or a draw from the long-term taste
   (half and half). Every event after a session's first is, with probability ``transition_prob``, a
   uniformly chosen successor of the previous item, else a popularity draw from its category.
   Transitions never cross sessions.
7. Event types (a funnel): each generated event is a ``cart`` with probability ``cart_prob``, a
   direct ``buy`` with probability 0.01, else a ``view``. A session that contains a cart ends, with
   probability ``buy_prob``, with one extra ``buy`` event of the last item carted in it, so buys
   mostly follow a cart in the same session.

Which scale each piece of structure lives at:

* the last event: successor transitions (step 6);
* session (minutes; a ``30m`` window): the session intent (step 5), which side browsing blurs, so
  the whole session tells it better than the last few events;
* day (a ``1d`` window): the current mission (step 4). Its category changes with each mission, and
  how many events back the mission began varies (missions differ in size, sessions in length):
  a window in time finds it, a fixed number of recent events does not;
* month / all history (``30d``, ``null``): the long-term taste (step 2) behind missions, side
  browsing and item popularity (step 1).

How much each scale helps is measured, not assumed: see the README's results. What each piece of
structure is worth at most, to oracles that know it: ``scripts/synthetic_oracle.py``.

Timestamps are whole seconds from ``start`` (UTC), so equal timestamps occur inside sessions; rows
come sorted by (user_id, timestamp) with the generation order kept on ties, and timestamps never
decrease within a user. :meth:`SyntheticSource.generate` also returns the planted ground truth
(successor table, sessions, categories) for tests and diagnostics.

Generation is vectorised with numpy: the only Python loops run over the position inside a session
(at most ``max_session_length`` steps) and over the few successors/favourites per item/user.
The steps themselves, the constants of the process and the item titles are in
:mod:`recsys_cli.data.synthetic_process`; this module holds the reader, its settings and checks,
and the planted ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import polars as pl

from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.data.synthetic_process import (
    DIRECT_BUY_PROB,
    EVENT_TYPES,
    GENERATOR_VERSION,
    assemble,
    category_names,
    items_frame,
    make_catalogue,
    make_sessions,
    make_users,
    place_missions,
    session_intents,
    session_items,
)
from recsys_cli.errors import ConfigError


@dataclass
class SyntheticTruth:
    """The planted structure behind one generated log (0-based category indices, raw 1-based ids).

    successors:       [num_items + 1, successors_per_item] successor item ids of each item (row 0 unused)
    item_category:    [num_items + 1] category index of each item (entry 0 is -1)
    session_id:       [num_events] session index of each event row (increasing down the rows)
    session_category: [num_sessions] category index of each session (its intent)
    session_mission:  [num_sessions] mission index of each session
    mission_category: [num_missions] category index of each mission
    favourites:       [num_users + 1, k] favourite category indices of each user (-1 where unused)
    taste:            [num_users + 1, k] taste weights matching ``favourites`` (rows sum to 1)
    popularity:       [num_items + 1] probability of each item in a popularity draw from its
                      category (entry 0 is 0; each category's entries sum to 1)
    closing_buy:      [num_events] whether the event is the closing buy of a session (step 7)
    categories:       the category names, by index
    """

    successors: np.ndarray
    item_category: np.ndarray
    session_id: np.ndarray
    session_category: np.ndarray
    session_mission: np.ndarray
    mission_category: np.ndarray
    favourites: np.ndarray
    taste: np.ndarray
    popularity: np.ndarray
    closing_buy: np.ndarray
    categories: list[str]


class SyntheticSource(DatasetReader):
    """Generates a seeded events/items log with structure at session, day-week and all-time scales.

    Every argument is a plain number or string so it can come from a Hydra YAML; all of them are
    public attributes and so part of :meth:`settings` and the cache fingerprint.
    """

    name = "synthetic"

    def __init__(
        self,
        num_users: int = 2000,
        num_items: int = 1000,
        num_categories: int = 20,
        days: int = 120,
        sessions_per_user: float = 25.0,
        session_length: float = 5.0,
        successors_per_item: int = 3,
        transition_prob: float = 0.15,
        session_focus: float = 0.6,
        mission_days: float = 1.0,
        sessions_per_mission: float = 4.0,
        seed: int = 0,
        start: str = "2024-01-01",
        max_session_length: int = 20,
        gap_minutes: float = 1.5,
        min_session_gap_hours: float = 1.0,
        zipf_exponent: float = 1.0,
        activity_sigma: float = 0.6,
        cart_prob: float = 0.1,
        buy_prob: float = 0.5,
    ) -> None:
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.num_categories = int(num_categories)
        self.days = float(days)
        self.sessions_per_user = float(sessions_per_user)
        self.session_length = float(session_length)
        self.successors_per_item = int(successors_per_item)
        self.transition_prob = float(transition_prob)
        self.session_focus = float(session_focus)
        self.mission_days = float(mission_days)
        self.sessions_per_mission = float(sessions_per_mission)
        self.seed = int(seed)
        self.start = str(start)
        self.max_session_length = int(max_session_length)
        self.gap_minutes = float(gap_minutes)
        self.min_session_gap_hours = float(min_session_gap_hours)
        self.zipf_exponent = float(zipf_exponent)
        self.activity_sigma = float(activity_sigma)
        self.cart_prob = float(cart_prob)
        self.buy_prob = float(buy_prob)
        self._check()
        self._start_us = _parse_start(self.start)

    def _check(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(
                    f"synthetic data: {key}={getattr(self, key)!r} is invalid: it must be {what}"
                )

        need(self.num_users >= 1, "num_users", ">= 1")
        need(self.num_categories >= 1, "num_categories", ">= 1")
        need(self.num_items >= self.num_categories, "num_items", ">= num_categories")
        need(self.days > 0, "days", "> 0")
        need(self.sessions_per_user > 0, "sessions_per_user", "> 0")
        need(self.max_session_length >= 1, "max_session_length", ">= 1")
        need(
            1 <= self.session_length <= self.max_session_length,
            "session_length",
            "between 1 and max_session_length",
        )
        need(self.successors_per_item >= 1, "successors_per_item", ">= 1")
        need(0 <= self.transition_prob <= 1, "transition_prob", "in [0, 1]")
        need(0 <= self.session_focus <= 1, "session_focus", "in [0, 1]")
        need(self.mission_days > 0, "mission_days", "> 0")
        need(self.sessions_per_mission >= 1, "sessions_per_mission", ">= 1")
        need(self.seed >= 0, "seed", ">= 0")
        need(self.gap_minutes > 0, "gap_minutes", "> 0")
        need(
            self.min_session_gap_hours > 0.5,
            "min_session_gap_hours",
            "> 0.5 (sessions must be further apart than a 30-minute window)",
        )
        need(self.zipf_exponent >= 0, "zipf_exponent", ">= 0")
        need(self.activity_sigma >= 0, "activity_sigma", ">= 0")
        need(0 <= self.cart_prob <= 1 - DIRECT_BUY_PROB, "cart_prob", "in [0, 0.99]")
        need(0 <= self.buy_prob <= 1, "buy_prob", "in [0, 1]")

    def settings(self) -> dict:
        return {**super().settings(), "generator_version": GENERATOR_VERSION}

    def read(self) -> RawDataset:
        return self.generate()[0]

    def generate(self) -> tuple[RawDataset, SyntheticTruth]:
        """The log (as :meth:`read` returns it) and the structure planted in it.

        The steps of the module docstring, in the order of their draws from one generator."""
        rng = np.random.default_rng(self.seed)
        n_cats = self.num_categories
        catalogue = make_catalogue(
            rng, self.num_items, n_cats, self.successors_per_item, self.zipf_exponent
        )
        users = make_users(rng, self.num_users, n_cats, self.sessions_per_user, self.activity_sigma)
        sessions = make_sessions(
            rng,
            users.n_sess,
            session_length=self.session_length,
            max_session_length=self.max_session_length,
            cart_prob=self.cart_prob,
            buy_prob=self.buy_prob,
            gap_minutes=self.gap_minutes,
            days=self.days,
            min_session_gap_hours=self.min_session_gap_hours,
        )
        missions = place_missions(
            rng, users, sessions, n_cats, self.sessions_per_mission, self.mission_days
        )
        sess_cat = session_intents(rng, users, sessions, missions, n_cats)
        item = session_items(
            rng, catalogue, users, sessions, missions, sess_cat,
            self.session_focus, self.transition_prob,
        )  # fmt: skip
        out_item, out_type, closing_buy = assemble(sessions, item)

        out_sess, item_cat = sessions.out_sess, catalogue.item_cat
        seconds = np.floor(missions.sess_start[out_sess] + sessions.inner).astype(np.int64)
        names = category_names(n_cats)
        name_series = pl.Series("category", names, dtype=pl.Utf8)
        events = pl.DataFrame(
            {
                "user_id": pl.Series(sessions.sess_user[out_sess] + 1, dtype=pl.Int64),
                "item_id": pl.Series(out_item + 1, dtype=pl.Int64),
                "timestamp": pl.Series(self._start_us + seconds * 1_000_000, dtype=pl.Int64)
                .cast(pl.Datetime("us"))
                .dt.replace_time_zone("UTC"),
                "event_type": pl.Series(EVENT_TYPES, dtype=pl.Utf8).gather(out_type),
                "category": name_series.gather(item_cat[out_item]),
            }
        )
        items = items_frame(rng, item_cat, names)
        n_fav_max = users.favourites.shape[1]
        truth = SyntheticTruth(
            successors=np.vstack(
                [np.zeros((1, self.successors_per_item), np.int64), catalogue.successors + 1]
            ),
            item_category=np.concatenate([[-1], item_cat]),
            session_id=out_sess,
            session_category=sess_cat,
            session_mission=missions.mission,
            mission_category=missions.mis_cat,
            favourites=np.vstack(
                [np.full((1, n_fav_max), -1), np.where(users.used, users.favourites, -1)]
            ),
            taste=np.vstack([np.zeros((1, n_fav_max)), users.taste]),
            popularity=catalogue.popularity,
            closing_buy=closing_buy,
            categories=names,
        )
        return RawDataset(events, items, source_files=[], name=self.name), truth


def _parse_start(start: str) -> int:
    """Microseconds since the epoch of an ISO date/time; naive values are taken as UTC."""
    try:
        when = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"synthetic data: start={start!r} is not an ISO date such as '2024-01-01'"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delta = when - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
