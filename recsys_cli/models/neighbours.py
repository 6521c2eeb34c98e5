"""Item-to-item nearest neighbours: a count baseline scored by the same evaluation code as the
neural models (see :mod:`recsys_cli.models.baselines` for the pattern it follows)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.output import ModelOutput
from recsys_cli.contract.params import NonNegative, PositiveInt, Range
from recsys_cli.models.baselines import SparseRows

# the recency factor of the query: 1 weighs every query event equally, 0 keeps only the newest
Decay = Annotated[float, Range(0, 1)]


class ItemKNN(SparseRows):
    """Item-based k-nearest-neighbour recommender: cosine similarity of co-occurrence in the
    training histories, the neighbours of the user's latest items summed.

    Similarity (fitted on the training events only). With X the binary user x item matrix of the
    training events and U_i the users with a training event of item i::

        sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i| |U_j|) + shrink),   i != j

    the cosine of the columns of X, with RecBole's ``shrink`` in the denominator (default 0:
    the plain cosine; a positive value damps similarities between rarely seen items). Each item
    keeps its ``neighbours`` most similar items (default 100, RecBole ItemKNN's k; ties go to
    the smaller item index) with a similarity above 0, stored sparse (CSR buffers: memory linear
    in ``N x neighbours``). The similarities are computed for a block of items at a time, never
    as a dense N x N matrix: the block's co-occurrence counts [rows, N + 1] are accumulated from
    the training histories (for each pair (i, u) of a block item i and one of its users u, every
    item j of u), its top ``neighbours`` per row kept, then the next block. A block has
    ``max(1, block_entries // (N + 1))`` rows and the histories are expanded at most about
    ``block_entries`` (i, u, j) triples at a time, so memory is O(block_entries), not O(N^2);
    time is O(sum over users of |I_u|^2 + N^2).

    Query and scores. The query is the user's last ``query_len`` events (padding ignored), the
    event of age a (0 = the newest) weighted ``decay ** a``; an item that occurs more than once
    counts once, with the weight of its newest occurrence (X is binary, so the user history is
    a set, as in ItemKNN; repeating an item does not multiply its neighbours)::

        score(j) = sum over distinct query items q of weight(q) * sim(q, j)
                   + popularity_weight * popularity(j)

    where popularity is the training count divided by the largest one (as in MarkovChain):
    items that are no neighbour of the query are ranked by popularity, and ties are broken by
    it. Scores are float32, so the popularity term only separates equal scores exactly where
    they are 0.

    Defaults for the query: ``query_len=1`` with ``decay=1``, i.e. the neighbours of the last
    item: the item-KNN baseline of the session-based literature (Hidasi et al. 2016, GRU4Rec's
    Item-KNN; Ludewig & Jannach 2018, IKNN, which considers only the last item of the session).
    It is the item-to-item counterpart of the first-order MarkovChain, which also looks at the
    last item only: the two differ in how items are related (symmetric cosine over whole
    training histories here, directed transition counts between consecutive events there). A
    longer query with ``decay < 1`` gives a recency-weighted variant (V-SKNN, Ludewig & Jannach
    2018, also down-weights older session positions, linearly there); ``query_len`` equal to
    ``data.max_len`` with ``decay=1`` scores against the whole input the sequence models read,
    equally weighted, as RecBole's (non-sequential) ItemKNN scores the user's whole history.
    """

    requires_training = False
    scale_names: list[str] = []

    def __init__(
        self,
        spec: DataSpec,
        neighbours: PositiveInt = 100,
        shrink: NonNegative = 0.0,
        query_len: PositiveInt = 1,
        decay: Decay = 1.0,
        popularity_weight: NonNegative = 1e-6,
        block_entries: PositiveInt = 1 << 22,
    ):
        super().__init__()
        self.num_items = spec.num_items
        self.neighbours, self.shrink = neighbours, shrink
        self.query_len, self.decay = query_len, decay
        self.popularity_weight, self.block_entries = popularity_weight, block_entries
        self.register_buffer("crow", torch.zeros(self.num_items + 2, dtype=torch.long))
        self.register_buffer("col", torch.zeros(0, dtype=torch.long))
        self.register_buffer("val", torch.zeros(0, dtype=torch.float32))
        self.register_buffer("popularity", torch.zeros(self.num_items + 1, dtype=torch.float32))

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, items: np.ndarray, users: np.ndarray) -> None:
        """items, users: [E] training events (item index 1..N, user index) in time order per user."""
        n = self.num_items + 1
        items, users = np.asarray(items, dtype=np.int64), np.asarray(users, dtype=np.int64)
        pop = np.bincount(items, minlength=n).astype(np.float32)
        self.popularity = torch.from_numpy(pop / max(pop.max(initial=0.0), 1.0))
        # X: the distinct (user, item) pairs, by user (the rows of X) and by item (its columns)
        pairs = np.unique(users * n + items)
        user, item = np.unique(pairs // n, return_inverse=True)[1].reshape(-1), pairs % n
        user_start = np.concatenate([[0], np.cumsum(np.bincount(user))]).astype(np.int64)
        degree = np.diff(user_start)  # |I_u|: the distinct items of each user
        by_item = np.argsort(item, kind="stable")
        pair_user, pair_item = user[by_item], item[by_item]
        item_users = np.bincount(item, minlength=n)  # |U_i|
        item_start = np.concatenate([[0], np.cumsum(item_users)])
        budget = self.block_entries
        rows = max(1, budget // n)
        counts = np.zeros(n + 1, dtype=np.int64)  # counts[i + 1]: the neighbours kept for item i
        cols, sims = [], []
        for first in range(1, n, rows):
            last = min(first + rows, n)  # this block: items first..last-1
            cooccurrence = np.zeros((last - first) * n, dtype=np.int64)  # [block, N + 1], flat
            lo, hi = item_start[first], item_start[last]
            work = np.cumsum(degree[pair_user[lo:hi]])  # triples (i, u, j) up to each pair
            start = lo
            while start < hi:  # pairs (i, u) of the block, at most ~budget triples at a time
                done = work[start - lo - 1] if start > lo else 0
                end = max(start + 1, lo + int(np.searchsorted(work, done + budget, side="right")))
                u, i = pair_user[start:end], pair_item[start:end]
                lengths = degree[u]
                offsets = np.arange(lengths.sum()) - np.repeat(
                    np.cumsum(lengths) - lengths, lengths
                )
                j = item[np.repeat(user_start[u], lengths) + offsets]  # every item of user u
                key = np.repeat((i - first) * n, lengths) + j
                cooccurrence += np.bincount(key, minlength=len(cooccurrence))
                start = end
            row, col, sim = self._top_neighbours(cooccurrence.reshape(-1, n), first, item_users)
            counts[first + 1 : last + 1] = np.bincount(row, minlength=last - first)
            cols.append(col)
            sims.append(sim)
        self.crow = torch.from_numpy(np.cumsum(counts))
        self.col = torch.from_numpy(np.concatenate([np.zeros(0, dtype=np.int64), *cols]))
        self.val = torch.from_numpy(np.concatenate([np.zeros(0, dtype=np.float32), *sims]))

    def _top_neighbours(
        self, cooccurrence: np.ndarray, first: int, item_users: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, item, similarity) of the ``neighbours`` most similar items of each row of a
        block of items (row r: item ``first + r``), row by row, most similar first, from the
        block's co-occurrence counts [rows, N + 1]."""
        row, col = np.nonzero(cooccurrence)
        count = cooccurrence[row, col].astype(np.float64)
        other = row + first != col
        row, col, count = row[other], col[other], count[other]
        sim = count / (
            np.sqrt(item_users[row + first] * item_users[col].astype(np.float64)) + self.shrink
        )
        order = np.lexsort((col, -sim, row))  # by row, then most similar, then smaller item
        row, col, sim = row[order], col[order], sim[order]
        rank = np.arange(len(row)) - np.searchsorted(row, row, side="left")
        keep = rank < self.neighbours
        return row[keep], col[keep], sim[keep].astype(np.float32)

    # -- scoring ---------------------------------------------------------------------------------
    def forward(self, batch: Batch, keep: torch.Tensor | None = None, last_only: bool = False) -> ModelOutput:
        query = batch["items"][:, -self.query_len :]  # [B, Q], newest last, 0 = padding
        B, Q = query.shape
        device = query.device
        age = torch.arange(Q - 1, -1, -1, device=device, dtype=torch.float32)
        weight = torch.full_like(age, self.decay).pow(age).expand(B, -1).contiguous()
        # one weight per distinct query item: that of its newest occurrence (the largest); the
        # padding (item 0) has no neighbours
        per_item = torch.zeros(B, self.num_items + 1, device=device)
        per_item.scatter_reduce_(1, query, weight, reduce="amax")
        per_item[:, 0] = 0.0
        rows, q = per_item.nonzero(as_tuple=True)
        start = self.crow[q]
        lengths = self.crow[q + 1] - start
        total = int(lengths.sum())
        offsets = torch.arange(total, device=device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        idx = torch.repeat_interleave(start, lengths) + offsets
        contribution = torch.repeat_interleave(per_item[rows, q], lengths) * self.val[idx]
        scores = self.popularity_weight * self.popularity.expand(B, -1).clone()
        scores.index_put_(
            (torch.repeat_interleave(rows, lengths), self.col[idx]), contribution, accumulate=True
        )
        scores[:, 0] = float("-inf")
        return ModelOutput(scores=scores)
