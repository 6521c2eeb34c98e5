"""The vectorised generative process behind :class:`~recsys_cli.data.synthetic.SyntheticSource`.

The steps 1-7 documented in :mod:`recsys_cli.data.synthetic` (a function a step, and a small
dataclass for what a step hands on), the probabilities of the process that are not worth a config
key, the category names and item titles, and the numpy helpers of the steps. Every step draws from
the caller's ``numpy.random.Generator``: the order of the draws, inside a step and of the calls in
``SyntheticSource.generate``, is part of the data; changing it needs a new ``GENERATOR_VERSION``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

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
class Catalogue:
    """Step 1, the items (0-based indices): category, popularity inside it, successors."""

    item_cat: np.ndarray  # [n_items] category index of each item
    order: np.ndarray  # [n_items] item indices grouped by category, by popularity rank inside
    pop_cdf: np.ndarray  # [n_items] category + within-category CDF along ``order``
    successors: np.ndarray  # [n_items, n_succ] successor item indices of each item
    popularity: np.ndarray  # [n_items + 1] probability in a draw from its category, by item id

    def popular(self, rng: np.random.Generator, cats: np.ndarray) -> np.ndarray:
        """One popularity draw (0-based item index) from each given category."""
        u = cats + rng.random(cats.size)
        n_items = self.order.size
        return self.order[np.minimum(np.searchsorted(self.pop_cdf, u, side="right"), n_items - 1)]


def make_catalogue(
    rng: np.random.Generator, n_items: int, n_cats: int, n_succ: int, zipf_exponent: float
) -> Catalogue:
    """Step 1: equal-sized shuffled categories, Zipf popularity inside each, successor series."""
    item_cat = rng.permutation(np.arange(n_items) % n_cats)
    # `order`: item indices grouped by category, in random order (= popularity rank) inside.
    perm = rng.permutation(n_items)
    order = perm[np.argsort(item_cat[perm], kind="stable")]
    cat_size = np.bincount(item_cat, minlength=n_cats)
    cat_begin = np.concatenate([[0], np.cumsum(cat_size)[:-1]])
    sorted_cat = item_cat[order]
    rank = np.arange(n_items) - cat_begin[sorted_cat]
    weight = (rank + 1.0) ** -zipf_exponent
    within = np.cumsum(weight)
    within -= np.concatenate([[0.0], within[cat_begin[1:] - 1]])[sorted_cat]
    cat_total = within[cat_begin + cat_size - 1]
    # cat + within-category CDF in (cat, cat + 1]: one searchsorted samples every category.
    pop_cdf = sorted_cat + within / cat_total[sorted_cat]
    pop_cdf[cat_begin + cat_size - 1] = np.arange(n_cats) + 1.0
    popularity = np.zeros(n_items + 1)
    popularity[order + 1] = weight / cat_total[sorted_cat]

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
    return Catalogue(item_cat, order, pop_cdf, successors, popularity)


@dataclass
class Users:
    """Step 2, the users: long-term taste and activity."""

    favourites: np.ndarray  # [n_users, k] favourite category indices (the first n_fav are used)
    n_fav: np.ndarray  # [n_users] number of favourites
    used: np.ndarray  # [n_users, k] whether each favourite column is used
    taste: np.ndarray  # [n_users, k] weights of the favourites (0 where unused; rows sum to 1)
    taste_cdf: np.ndarray  # [n_users, k] cumulative ``taste``
    n_sess: np.ndarray  # [n_users] number of sessions

    def from_taste(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """One category drawn from each given user's long-term taste."""
        u = rng.random(users.size)[:, None]
        k = np.minimum((self.taste_cdf[users] < u).sum(axis=1), self.n_fav[users] - 1)
        return self.favourites[users, k]


def make_users(
    rng: np.random.Generator,
    n_users: int,
    n_cats: int,
    sessions_per_user: float,
    activity_sigma: float,
) -> Users:
    """Step 2: 2-4 favourite categories with Dirichlet(1) weights, a lognormal activity."""
    n_fav_max = min(MAX_FAVOURITES, n_cats)
    favourites = _distinct(rng, np.full(n_users, n_cats), n_fav_max)
    n_fav = np.minimum(rng.integers(MIN_FAVOURITES, MAX_FAVOURITES + 1, n_users), n_fav_max)
    used = np.arange(n_fav_max) < n_fav[:, None]
    taste = np.where(used, rng.gamma(1.0, size=(n_users, n_fav_max)), 0.0)
    taste /= taste.sum(axis=1, keepdims=True)
    taste_cdf = np.cumsum(taste, axis=1)
    activity = rng.lognormal(-0.5 * activity_sigma**2, activity_sigma, n_users)
    n_sess = np.maximum(2, rng.poisson(sessions_per_user * activity))
    return Users(favourites, n_fav, used, taste, taste_cdf, n_sess)


@dataclass
class Sessions:
    """Step 3, the sessions: sizes, event types, times inside and the room around them. "Chain"
    events are the generated ones; the output rows add each session's closing buy, if any."""

    sess_user: np.ndarray  # [n_s] user of each session
    size: np.ndarray  # [n_s] chain events of each session
    chain_begin: np.ndarray  # [n_s] first chain event of each session
    ev_sess: np.ndarray  # [n_chain] session of each chain event
    ev_pos: np.ndarray  # [n_chain] position inside its session
    ev_type: np.ndarray  # [n_chain] 0 view, 1 cart, 2 buy
    ends_in_buy: np.ndarray  # [n_s] whether the session ends with a closing buy
    out_begin: np.ndarray  # [n_s] first output row of each session
    out_sess: np.ndarray  # [n_events] session of each output row
    inner: np.ndarray  # [n_events] seconds since the start of its session
    reserved: np.ndarray  # [n_s] seconds taken by the user's earlier sessions and their gaps
    free: np.ndarray  # [n_users] seconds of the span left free by a user's sessions and gaps


def make_sessions(
    rng: np.random.Generator,
    n_sess: np.ndarray,
    *,
    session_length: float,
    max_session_length: int,
    cart_prob: float,
    buy_prob: float,
    gap_minutes: float,
    days: float,
    min_session_gap_hours: float,
) -> Sessions:
    """Step 3 (and the event types of step 7): geometric sizes, the funnel, exponential gaps."""
    sess_user = np.repeat(np.arange(n_sess.size), n_sess)
    n_s = sess_user.size

    # --- 3a. session sizes and the event-type funnel (independent of items) ----------------
    size = np.minimum(rng.geometric(1.0 / session_length, n_s), max_session_length)
    ev_sess = np.repeat(np.arange(n_s), size)
    n_chain = ev_sess.size
    chain_begin = np.concatenate([[0], np.cumsum(size)[:-1]])
    ev_pos = np.arange(n_chain) - chain_begin[ev_sess]
    u = rng.random(n_chain)
    ev_type = np.where(u < cart_prob, 1, np.where(u < cart_prob + DIRECT_BUY_PROB, 2, 0))
    has_cart = np.bincount(ev_sess[ev_type == 1], minlength=n_s) > 0
    ends_in_buy = has_cart & (rng.random(n_s) < buy_prob)

    # --- 3b. times: gaps inside sessions, then the room to place sessions over `days` -------
    total = size + ends_in_buy
    out_begin = np.concatenate([[0], np.cumsum(total)[:-1]])
    n_events = int(total.sum())
    out_sess = np.repeat(np.arange(n_s), total)
    gap = np.minimum(rng.exponential(gap_minutes * 60.0, n_events), MAX_INNER_GAP_S)
    gap[out_begin] = 0.0
    inner = _segment_cumsum(gap, out_begin, out_sess)  # seconds since the session start
    duration = inner[out_begin + total - 1]

    span = days * 86400.0
    min_gap = min_session_gap_hours * 3600.0
    block = duration + min_gap
    user_begin = np.concatenate([[0], np.cumsum(n_sess)[:-1]])
    reserved = _segment_cumsum(block, user_begin, sess_user) - block  # exclusive per user
    free = np.maximum(span - np.add.reduceat(block, user_begin) + min_gap, 0.0)
    return Sessions(
        sess_user, size, chain_begin, ev_sess, ev_pos, ev_type, ends_in_buy,
        out_begin, out_sess, inner, reserved, free,
    )  # fmt: skip


@dataclass
class Missions:
    """Step 4, the missions and the session start times they lead to."""

    mis_cat: np.ndarray  # [n_missions] category index of each mission
    mission: np.ndarray  # [n_s] mission of each session
    sess_start: np.ndarray  # [n_s] seconds from ``start`` to each session's first event


def place_missions(
    rng: np.random.Generator,
    users: Users,
    sessions: Sessions,
    n_cats: int,
    sessions_per_mission: float,
    mission_days: float,
) -> Missions:
    """Step 4: a few sessions close in time about one category, stratified over the span."""
    n_sess, sess_user, free = users.n_sess, sessions.sess_user, sessions.free
    n_s = sess_user.size
    n_mis = np.maximum(1, rng.poisson(n_sess / sessions_per_mission))
    mis_user = np.repeat(np.arange(n_sess.size), n_mis)
    mis_begin = np.concatenate([[0], np.cumsum(n_mis)[:-1]])
    mis_cat = np.where(
        rng.random(mis_user.size) < MISSION_FROM_TASTE,
        users.from_taste(rng, mis_user),
        rng.integers(0, n_cats, mis_user.size),
    )
    # stratified centres: mission k of n lies in the k-th n-th of the span, so missions are
    # separate bursts rather than overlapping ones (their categories are drawn independently)
    rank = np.arange(mis_user.size) - mis_begin[mis_user]
    centre = (rank + rng.random(mis_user.size)) / n_mis[mis_user]
    mission = mis_begin[sess_user] + np.floor(rng.random(n_s) * n_mis[sess_user]).astype(np.int64)
    spread = mission_days * 86400.0 / np.maximum(free[sess_user], 1.0)
    raw = np.abs(centre[mission] + rng.normal(0.0, 1.0, n_s) * spread)
    raw = np.clip(1.0 - np.abs(1.0 - raw), 0.0, 1.0 - 1e-6)  # reflected into [0, 1)
    # the k-th session of a user (in row order) takes the k-th earliest position, and its mission
    by_time = np.lexsort((raw, sess_user))
    frac, mission = raw[by_time], mission[by_time]
    sess_start = np.maximum(frac * free[sess_user] + sessions.reserved, 0.0)  # no rounding below 0
    return Missions(mis_cat, mission, sess_start)


def session_intents(
    rng: np.random.Generator, users: Users, sessions: Sessions, missions: Missions, n_cats: int
) -> np.ndarray:
    """Step 5: [n_s] each session's category: its mission's, a taste draw, or a uniform one."""
    n_s = sessions.sess_user.size
    u = rng.random(n_s)
    return np.where(
        u < SESSION_FROM_MISSION,
        missions.mis_cat[missions.mission],
        np.where(
            u < SESSION_FROM_MISSION + SESSION_FROM_TASTE,
            users.from_taste(rng, sessions.sess_user),
            rng.integers(0, n_cats, n_s),
        ),
    )


def session_items(
    rng: np.random.Generator,
    catalogue: Catalogue,
    users: Users,
    sessions: Sessions,
    missions: Missions,
    sess_cat: np.ndarray,
    session_focus: float,
    transition_prob: float,
) -> np.ndarray:
    """Step 6: [n_chain] the item (0-based) of each chain event: a successor of the previous item
    or a popularity draw from the event's category (the intent, or side browsing)."""
    ev_sess, size = sessions.ev_sess, sessions.size
    n_chain = ev_sess.size
    # an event's category: the session intent (p = session_focus), else side browsing: the
    # mission's category or a draw from the long-term taste
    u = rng.random(n_chain)
    side = np.where(
        u < session_focus + SIDE_FROM_MISSION * (1.0 - session_focus),
        missions.mis_cat[missions.mission][ev_sess],
        users.from_taste(rng, sessions.sess_user[ev_sess]),
    )
    ev_cat = np.where(u < session_focus, sess_cat[ev_sess], side)
    item = catalogue.popular(rng, ev_cat)
    follows = (rng.random(n_chain) < transition_prob) & (sessions.ev_pos > 0)
    pick = rng.integers(0, catalogue.successors.shape[1], n_chain)
    for step in range(1, int(size.max())):
        idx = sessions.chain_begin[size > step] + step
        idx = idx[follows[idx]]
        item[idx] = catalogue.successors[item[idx - 1], pick[idx]]
    return item


def assemble(sessions: Sessions, item: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 7: [n_events] item (0-based), event type and closing-buy flag of each output row: the
    chain events, plus a closing buy of the last item carted in each session that ends in one."""
    ev_sess, size, out_begin = sessions.ev_sess, sessions.size, sessions.out_begin
    n_events = sessions.out_sess.size
    out_item = np.empty(n_events, dtype=np.int64)
    out_type = np.empty(n_events, dtype=np.int64)
    chain_at = out_begin[ev_sess] + sessions.ev_pos
    out_item[chain_at] = item
    out_type[chain_at] = sessions.ev_type
    carts = np.flatnonzero(sessions.ev_type == 1)
    last_of_session = np.append(ev_sess[carts][1:] != ev_sess[carts][:-1], carts.size > 0)
    last_cart = carts[last_of_session[: carts.size]]
    last_cart = last_cart[sessions.ends_in_buy[ev_sess[last_cart]]]
    buy_at = out_begin[ev_sess[last_cart]] + size[ev_sess[last_cart]]
    out_item[buy_at] = item[last_cart]
    out_type[buy_at] = 2
    closing_buy = np.zeros(n_events, dtype=bool)
    closing_buy[buy_at] = True
    return out_item, out_type, closing_buy


def items_frame(rng: np.random.Generator, item_cat: np.ndarray, names: list[str]) -> pl.DataFrame:
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
