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
   from a per-category word list, so item text carries the category.
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
structure is worth at most, to oracles that know it: :mod:`recsys_cli.data.synthetic_oracle`.

Timestamps are whole seconds from ``start`` (UTC), so equal timestamps occur inside sessions; rows
come sorted by (user_id, timestamp) with the generation order kept on ties, and timestamps never
decrease within a user. :meth:`SyntheticSource.generate` also returns the planted ground truth
(successor table, sessions, categories) for tests and diagnostics.

Generation is vectorised with numpy: the only Python loops run over the position inside a session
(at most ``max_session_length`` steps) and over the few successors/favourites per item/user.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import polars as pl

from recsys_cli.data.formats.base import DatasetReader, RawDataset
from recsys_cli.errors import ConfigError

EVENT_TYPES = ("view", "cart", "buy")
# Bump when the generative process changes: it is part of the cache fingerprint, so prepared
# data cached from an older generator is never taken for the new one.
GENERATOR_VERSION = 3

# Probabilities of the generative process that are not worth a config key (see the module docstring).
MISSION_FROM_TASTE = 0.5  # a mission's category comes from the long-term taste (else uniform)
SESSION_FROM_MISSION = 0.85  # a session's intent is its mission's category ...
SESSION_FROM_TASTE = 0.1  # ... or a draw from the long-term taste (else uniform)
SIDE_FROM_MISSION = 0.5  # side browsing: the mission's category (else the long-term taste)
DIRECT_BUY_PROB = 0.01  # an event that is a buy without an earlier cart
MAX_INNER_GAP_S = 20 * 60.0  # cap on the gap between consecutive events of one session
MIN_FAVOURITES, MAX_FAVOURITES = 2, 4

CATEGORY_NOUNS: dict[str, tuple[str, ...]] = {
    "garden": ("lamp", "hose", "planter", "shovel", "bench"),
    "kitchen": ("pan", "knife", "kettle", "blender", "mug"),
    "books": ("novel", "atlas", "cookbook", "memoir", "anthology"),
    "electronics": ("headphones", "charger", "speaker", "tablet", "camera"),
    "toys": ("puzzle", "robot", "doll", "blocks", "kite"),
    "sports": ("racket", "ball", "helmet", "jersey", "dumbbell"),
    "beauty": ("serum", "lipstick", "cream", "perfume", "palette"),
    "fashion": ("jacket", "scarf", "sneakers", "dress", "belt"),
    "music": ("guitar", "vinyl", "ukulele", "drumsticks", "keyboard"),
    "games": ("boardgame", "controller", "dice", "card game", "console"),
    "pets": ("leash", "collar", "bowl", "scratcher", "aquarium"),
    "office": ("stapler", "notebook", "chair", "desk", "pen"),
    "auto": ("wiper", "tire", "jump starter", "floor mat", "wax"),
    "health": ("vitamins", "thermometer", "bandage", "massager", "scale"),
    "baby": ("stroller", "bottle", "onesie", "rattle", "crib"),
    "tools": ("drill", "hammer", "wrench", "saw", "toolbox"),
    "grocery": ("coffee", "pasta", "olive oil", "tea", "cereal"),
    "jewelry": ("ring", "necklace", "bracelet", "earrings", "watch"),
    "outdoor": ("tent", "backpack", "lantern", "hammock", "compass"),
    "travel": ("suitcase", "neck pillow", "adapter", "organizer", "passport holder"),
}
ADJECTIVES = (
    "Cozy", "Classic", "Modern", "Compact", "Deluxe", "Vintage", "Smart", "Eco",
    "Premium", "Handy", "Bright", "Rustic", "Sleek", "Sturdy", "Mini", "Ultra",
)  # fmt: skip


def category_names(num_categories: int) -> list[str]:
    """Category names: the base names, then ``garden2``, ``kitchen2``, ... when more are needed."""
    base = list(CATEGORY_NOUNS)
    return [
        base[c % len(base)] + ("" if c < len(base) else str(c // len(base) + 1))
        for c in range(num_categories)
    ]


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
        """The log (as :meth:`read` returns it) and the structure planted in it."""
        rng = np.random.default_rng(self.seed)
        n_items, n_cats, n_succ = self.num_items, self.num_categories, self.successors_per_item

        # --- 1. items: category, popularity inside the category, successors -------------------
        item_cat = rng.permutation(np.arange(n_items) % n_cats)
        # `order`: item indices grouped by category, in random order (= popularity rank) inside.
        perm = rng.permutation(n_items)
        order = perm[np.argsort(item_cat[perm], kind="stable")]
        cat_size = np.bincount(item_cat, minlength=n_cats)
        cat_begin = np.concatenate([[0], np.cumsum(cat_size)[:-1]])
        sorted_cat = item_cat[order]
        rank = np.arange(n_items) - cat_begin[sorted_cat]
        weight = (rank + 1.0) ** -self.zipf_exponent
        within = np.cumsum(weight)
        within -= np.concatenate([[0.0], within[cat_begin[1:] - 1]])[sorted_cat]
        cat_total = within[cat_begin + cat_size - 1]
        # cat + within-category CDF in (cat, cat + 1]: one searchsorted samples every category.
        pop_cdf = sorted_cat + within / cat_total[sorted_cat]
        pop_cdf[cat_begin + cat_size - 1] = np.arange(n_cats) + 1.0

        def popular(cats: np.ndarray) -> np.ndarray:
            """One popularity draw (0-based item index) from each given category."""
            u = cats + rng.random(cats.size)
            return order[np.minimum(np.searchsorted(pop_cdf, u, side="right"), n_items - 1)]

        # series: each category's items form a random cycle (independent of popularity); an
        # item's successors are the next n_succ items along it (fewer distinct ones only when the
        # category is too small), never the item itself
        perm = rng.permutation(n_items)
        cycle = perm[np.argsort(item_cat[perm], kind="stable")]
        position = np.empty(n_items, dtype=np.int64)
        position[cycle] = np.arange(n_items) - cat_begin[item_cat[cycle]]
        m = cat_size[item_cat]  # size of each item's category
        offset = 1 + np.arange(n_succ)[None, :] % np.maximum(m - 1, 1)[:, None]
        successors = cycle[cat_begin[item_cat][:, None] + (position[:, None] + offset) % m[:, None]]

        # --- 2. users: long-term taste and activity -------------------------------------------
        n_users = self.num_users
        n_fav_max = min(MAX_FAVOURITES, n_cats)
        favourites = _distinct(rng, np.full(n_users, n_cats), n_fav_max)
        n_fav = np.minimum(rng.integers(MIN_FAVOURITES, MAX_FAVOURITES + 1, n_users), n_fav_max)
        used = np.arange(n_fav_max) < n_fav[:, None]
        taste = np.where(used, rng.gamma(1.0, size=(n_users, n_fav_max)), 0.0)
        taste /= taste.sum(axis=1, keepdims=True)
        taste_cdf = np.cumsum(taste, axis=1)

        def from_taste(users: np.ndarray) -> np.ndarray:
            """One category drawn from each given user's long-term taste."""
            u = rng.random(users.size)[:, None]
            k = np.minimum((taste_cdf[users] < u).sum(axis=1), n_fav[users] - 1)
            return favourites[users, k]

        activity = rng.lognormal(-0.5 * self.activity_sigma**2, self.activity_sigma, n_users)
        n_sess = np.maximum(2, rng.poisson(self.sessions_per_user * activity))
        sess_user = np.repeat(np.arange(n_users), n_sess)
        n_s = sess_user.size

        # --- 3a. session sizes and the event-type funnel (independent of items) ----------------
        size = np.minimum(rng.geometric(1.0 / self.session_length, n_s), self.max_session_length)
        ev_sess = np.repeat(np.arange(n_s), size)  # generated ("chain") events
        n_chain = ev_sess.size
        chain_begin = np.concatenate([[0], np.cumsum(size)[:-1]])
        ev_pos = np.arange(n_chain) - chain_begin[ev_sess]
        u = rng.random(n_chain)
        ev_type = np.where(
            u < self.cart_prob, 1, np.where(u < self.cart_prob + DIRECT_BUY_PROB, 2, 0)
        )
        is_cart = ev_type == 1
        has_cart = np.bincount(ev_sess[is_cart], minlength=n_s) > 0
        ends_in_buy = has_cart & (rng.random(n_s) < self.buy_prob)

        # --- 3b. times: gaps inside sessions, then sessions placed over `days` -----------------
        total = size + ends_in_buy
        out_begin = np.concatenate([[0], np.cumsum(total)[:-1]])
        n_events = int(total.sum())
        out_sess = np.repeat(np.arange(n_s), total)
        gap = np.minimum(rng.exponential(self.gap_minutes * 60.0, n_events), MAX_INNER_GAP_S)
        gap[out_begin] = 0.0
        inner = _segment_cumsum(gap, out_begin, out_sess)  # seconds since the session start
        duration = inner[out_begin + total - 1]

        span = self.days * 86400.0
        min_gap = self.min_session_gap_hours * 3600.0
        block = duration + min_gap
        user_begin = np.concatenate([[0], np.cumsum(n_sess)[:-1]])
        reserved = _segment_cumsum(block, user_begin, sess_user) - block  # exclusive per user
        free = np.maximum(span - np.add.reduceat(block, user_begin) + min_gap, 0.0)

        # --- 4. missions: a few sessions close in time about one category ----------------------
        n_mis = np.maximum(1, rng.poisson(n_sess / self.sessions_per_mission))
        mis_user = np.repeat(np.arange(n_users), n_mis)
        mis_begin = np.concatenate([[0], np.cumsum(n_mis)[:-1]])
        mis_cat = np.where(
            rng.random(mis_user.size) < MISSION_FROM_TASTE,
            from_taste(mis_user),
            rng.integers(0, n_cats, mis_user.size),
        )
        # stratified centres: mission k of n lies in the k-th n-th of the span, so missions are
        # separate bursts rather than overlapping ones (their categories are drawn independently)
        rank = np.arange(mis_user.size) - mis_begin[mis_user]
        centre = (rank + rng.random(mis_user.size)) / n_mis[mis_user]
        mission = mis_begin[sess_user] + np.floor(rng.random(n_s) * n_mis[sess_user]).astype(np.int64)
        spread = self.mission_days * 86400.0 / np.maximum(free[sess_user], 1.0)
        raw = np.abs(centre[mission] + rng.normal(0.0, 1.0, n_s) * spread)
        raw = np.clip(1.0 - np.abs(1.0 - raw), 0.0, 1.0 - 1e-6)  # reflected into [0, 1)
        # the k-th session of a user (in row order) takes the k-th earliest position, and its mission
        by_time = np.lexsort((raw, sess_user))
        frac, mission = raw[by_time], mission[by_time]
        sess_start = np.maximum(frac * free[sess_user] + reserved, 0.0)  # no rounding below 0

        # --- 5. session category --------------------------------------------------------------
        u = rng.random(n_s)
        sess_cat = np.where(
            u < SESSION_FROM_MISSION,
            mis_cat[mission],
            np.where(
                u < SESSION_FROM_MISSION + SESSION_FROM_TASTE,
                from_taste(sess_user),
                rng.integers(0, n_cats, n_s),
            ),
        )

        # --- 6. items along each session: successor transitions or popularity draws -----------
        # an event's category: the session intent (p = session_focus), else side browsing: the
        # mission's category or a draw from the long-term taste
        u = rng.random(n_chain)
        side = np.where(
            u < self.session_focus + SIDE_FROM_MISSION * (1.0 - self.session_focus),
            mis_cat[mission][ev_sess],
            from_taste(sess_user[ev_sess]),
        )
        ev_cat = np.where(u < self.session_focus, sess_cat[ev_sess], side)
        item = popular(ev_cat)
        follows = (rng.random(n_chain) < self.transition_prob) & (ev_pos > 0)
        pick = rng.integers(0, n_succ, n_chain)
        for step in range(1, int(size.max())):
            idx = chain_begin[size > step] + step
            idx = idx[follows[idx]]
            item[idx] = successors[item[idx - 1], pick[idx]]

        # --- 7. assemble: chain events, plus a closing buy of the last carted item -------------
        out_item = np.empty(n_events, dtype=np.int64)
        out_type = np.empty(n_events, dtype=np.int64)
        chain_at = out_begin[ev_sess] + ev_pos
        out_item[chain_at] = item
        out_type[chain_at] = ev_type
        carts = np.flatnonzero(is_cart)
        last_of_session = np.append(ev_sess[carts][1:] != ev_sess[carts][:-1], carts.size > 0)
        last_cart = carts[last_of_session[: carts.size]]
        last_cart = last_cart[ends_in_buy[ev_sess[last_cart]]]
        buy_at = out_begin[ev_sess[last_cart]] + size[ev_sess[last_cart]]
        out_item[buy_at] = item[last_cart]
        out_type[buy_at] = 2
        closing_buy = np.zeros(n_events, dtype=bool)
        closing_buy[buy_at] = True
        popularity = np.zeros(n_items + 1)
        popularity[order + 1] = weight / cat_total[sorted_cat]

        seconds = np.floor(sess_start[out_sess] + inner).astype(np.int64)
        names = category_names(n_cats)
        name_series = pl.Series("category", names, dtype=pl.Utf8)
        events = pl.DataFrame(
            {
                "user_id": pl.Series(sess_user[out_sess] + 1, dtype=pl.Int64),
                "item_id": pl.Series(out_item + 1, dtype=pl.Int64),
                "timestamp": pl.Series(self._start_us + seconds * 1_000_000, dtype=pl.Int64)
                .cast(pl.Datetime("us"))
                .dt.replace_time_zone("UTC"),
                "event_type": pl.Series(EVENT_TYPES, dtype=pl.Utf8).gather(out_type),
                "category": name_series.gather(item_cat[out_item]),
            }
        )
        items = self._items_frame(rng, item_cat, names)
        truth = SyntheticTruth(
            successors=np.vstack([np.zeros((1, n_succ), np.int64), successors + 1]),
            item_category=np.concatenate([[-1], item_cat]),
            session_id=out_sess,
            session_category=sess_cat,
            session_mission=mission,
            mission_category=mis_cat,
            favourites=np.vstack([np.full((1, n_fav_max), -1), np.where(used, favourites, -1)]),
            taste=np.vstack([np.zeros((1, n_fav_max)), taste]),
            popularity=popularity,
            closing_buy=closing_buy,
            categories=names,
        )
        return RawDataset(events, items, source_files=[], name=self.name), truth

    def _items_frame(
        self, rng: np.random.Generator, item_cat: np.ndarray, names: list[str]
    ) -> pl.DataFrame:
        """``item_id``, ``title`` ("<Adjective> <category> <noun> <id>") and ``category``."""
        base = list(CATEGORY_NOUNS)
        nouns_per_cat = len(CATEGORY_NOUNS[base[0]])
        nouns = pl.Series([n for b in base for n in CATEGORY_NOUNS[b]], dtype=pl.Utf8)
        noun_idx = (item_cat % len(base)) * nouns_per_cat + rng.integers(
            0, nouns_per_cat, item_cat.size
        )
        adjective = pl.Series(ADJECTIVES, dtype=pl.Utf8).gather(
            rng.integers(0, len(ADJECTIVES), item_cat.size)
        )
        item_id = pl.Series("item_id", np.arange(1, item_cat.size + 1), dtype=pl.Int64)
        category = pl.Series("category", names, dtype=pl.Utf8).gather(item_cat)
        frame = pl.DataFrame(
            {
                "item_id": item_id,
                "adjective": adjective,
                "noun": nouns.gather(noun_idx),
                "category": category,
            }
        )
        return frame.select(
            "item_id",
            pl.concat_str(
                ["adjective", "category", "noun", pl.col("item_id").cast(pl.Utf8)], separator=" "
            ).alias("title"),
            "category",
        )


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


def _segment_cumsum(values: np.ndarray, begin: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at every segment; ``begin[s]`` is the first row of
    segment ``s`` and ``segment[i]`` the segment of row ``i`` (segments contiguous, non-empty)."""
    total = np.cumsum(values)
    before = total[begin] - values[begin]  # running total before each segment
    return total - before[segment]


def _distinct(rng: np.random.Generator, n: np.ndarray, k: int) -> np.ndarray:
    """[len(n), k] uniform draws without replacement from ``0..n[r]-1`` for each row r.

    Where ``n[r] < k`` the row holds all ``n[r]`` values, then repeats (drawn with replacement).
    Loops over the k columns only: draw from the not yet chosen values, then step past the chosen
    ones in ascending order.
    """
    rows = n.size
    chosen = np.empty((rows, k), dtype=np.int64)
    for j in range(k):
        room = np.maximum(n - j, 1)
        x = np.floor(rng.random(rows) * room).astype(np.int64)
        if j:
            for y in np.sort(chosen[:, :j], axis=1).T:
                x += x >= y
        # rows that ran out of distinct values: plain draws with replacement
        x = np.where(j < n, x, np.floor(rng.random(rows) * n).astype(np.int64))
        chosen[:, j] = x
    return chosen
