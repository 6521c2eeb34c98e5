"""Count-based baselines scored by the same evaluation code as the neural models.

They are fitted from the training events of the split (never validation or test targets) and
have no gradient training: ``requires_training = False`` tells the entry point to call ``fit``
with the data module's ``train_events()``. Their output carries scores, not states.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.output import ModelOutput
from recsys_cli.contract.params import NonNegative


class MostPopular(nn.Module):
    """Scores every item by its number of training events."""

    requires_training = False
    scale_names: list[str] = []

    def __init__(self, spec: DataSpec):
        super().__init__()
        self.num_items = spec.num_items
        self.register_buffer("counts", torch.zeros(self.num_items + 1, dtype=torch.float64))

    def fit(self, items: np.ndarray, users: np.ndarray) -> None:
        """items, users: [E] training events (item index, user index) in time order per user."""
        counts = np.bincount(items, minlength=self.num_items + 1).astype(np.float64)
        self.counts.copy_(torch.from_numpy(counts))

    def forward(self, batch: Batch, keep: torch.Tensor | None = None, last_only: bool = False) -> ModelOutput:
        B = batch["items"].shape[0]
        scores = self.counts.float().expand(B, -1).clone()
        scores[:, 0] = float("-inf")
        return ModelOutput(scores=scores)


class SparseRows(nn.Module):
    """Base of count models holding a sparse item x item table as CSR buffers (``crow``, ``col``,
    ``val``), whose sizes depend on the data: a checkpoint of any size loads."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # adopt the stored shapes before loading
        for key in ("crow", "col", "val"):
            if prefix + key in state_dict:
                setattr(self, key, torch.empty_like(state_dict[prefix + key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MarkovChain(SparseRows):
    """First-order Markov chain: transition counts from the last item, popularity to break ties.

    Transitions are counted between consecutive training events of the same user; the counts are
    kept sparse (CSR), so memory is linear in the number of distinct transitions.
    """

    requires_training = False
    scale_names: list[str] = []

    def __init__(self, spec: DataSpec, popularity_weight: NonNegative = 1e-6):
        super().__init__()
        self.num_items, self.popularity_weight = spec.num_items, popularity_weight
        self.register_buffer("crow", torch.zeros(self.num_items + 2, dtype=torch.long))
        self.register_buffer("col", torch.zeros(0, dtype=torch.long))
        self.register_buffer("val", torch.zeros(0, dtype=torch.float32))
        self.register_buffer("popularity", torch.zeros(self.num_items + 1, dtype=torch.float32))

    def fit(self, items: np.ndarray, users: np.ndarray) -> None:
        same = users[1:] == users[:-1]
        src, dst = items[:-1][same], items[1:][same]
        n = self.num_items + 1
        pairs, counts = np.unique(src.astype(np.int64) * n + dst, return_counts=True)
        rows, cols = pairs // n, pairs % n
        crow = np.zeros(n + 1, dtype=np.int64)
        np.add.at(crow, rows + 1, 1)
        self.crow = torch.from_numpy(np.cumsum(crow))
        self.col = torch.from_numpy(cols.astype(np.int64))
        self.val = torch.from_numpy(counts.astype(np.float32))
        pop = np.bincount(items, minlength=n).astype(np.float32)
        self.popularity = torch.from_numpy(pop / max(pop.max(), 1.0))


    def forward(self, batch: Batch, keep: torch.Tensor | None = None, last_only: bool = False) -> ModelOutput:
        last = batch["items"][:, -1]  # [B]
        B = last.shape[0]
        start, end = self.crow[last], self.crow[last + 1]
        lengths = end - start
        rows = torch.repeat_interleave(torch.arange(B, device=last.device), lengths)
        offsets = torch.arange(int(lengths.sum()), device=last.device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        idx = torch.repeat_interleave(start, lengths) + offsets
        scores = self.popularity_weight * self.popularity.expand(B, -1).clone()
        scores[rows, self.col[idx]] += self.val[idx]
        scores[:, 0] = float("-inf")
        return ModelOutput(scores=scores)
