"""The order and the shape of batches: sharding across ranks, length bucketing, padding trimmed.

Nothing here changes which cases an epoch trains or evaluates, only how they are grouped:

- :class:`ShardedBatchSampler` gives each DDP rank its share of the case ids (training: a seeded
  permutation per epoch; evaluation: every case exactly once). With the cases' lengths it groups
  cases of similar length into the same batch: in training within pools of ``bucket_pool``
  batches of the epoch's permutation (``data.bucket_pool``), the batches then shuffled; in
  evaluation always (by length over the rank's cases; metrics are sums over cases, so the order
  does not matter).
- :func:`trim_padding` cuts the memory columns that are padding in every case of a batch: a batch
  of short histories is short. Sequences are left-padded (newest last) and every model reads
  them from the newest event back, so a trimmed batch gives the same states as the full one; it
  just does no work on padding. Bucketing is what makes batches short enough to trim.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from recsys_cli.contract.batch import CASE_FIELDS, WINDOW_FIELDS


class ShardedBatchSampler(Sampler):
    """Batches of case ids, sharded across DDP ranks without Lightning's sampler replacement.

    Training (``pad=True``): a seeded permutation per epoch; every rank gets the same number of
    batches (a few cases repeat) so collective ops stay in step. Evaluation (``pad=False``): rank r
    takes cases r, r + world, ... in order, each exactly once, so metrics summed over ranks equal the
    single-process ones.

    ``lengths`` [n] (each case's memory length) groups cases by length: in training only when
    ``bucket_pool > 0`` (pools of ``bucket_pool`` batches of the permutation are sorted by length
    and cut into batches, and the epoch's batches are shuffled; a pool is a whole number of
    batches, so the number of batches per epoch is unchanged); in evaluation, the rank's cases are
    taken in order of length.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world: int = 1,
        pad: bool = True,
        lengths: np.ndarray | None = None,
        bucket_pool: int = 0,
    ):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world, self.pad, self.epoch = rank, world, pad, 0
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"lengths has {len(lengths)} entries for {n} cases")
        self.lengths, self.bucket_pool = lengths, int(bucket_pool)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> np.ndarray:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).numpy()
        else:
            order = np.arange(self.n)
        if self.pad and self.world > 1:
            per_rank = math.ceil(self.n / self.world)
            order = np.resize(order, per_rank * self.world)
        return order[self.rank :: self.world]

    def _batches(self) -> list[np.ndarray]:
        idx, size = self._indices(), self.batch_size
        if self.lengths is not None and not self.shuffle:
            idx = idx[np.argsort(self.lengths[idx], kind="stable")]
        elif self.lengths is not None and self.bucket_pool > 0:
            pool = size * self.bucket_pool
            idx = np.concatenate(
                [chunk[np.argsort(self.lengths[chunk], kind="stable")] for chunk in np.split(idx, range(pool, len(idx), pool))]
            ) if len(idx) else idx  # fmt: skip
            batches = [idx[i : i + size] for i in range(0, len(idx), size)]
            # another stream than the permutation's: the batch order is shuffled
            g = torch.Generator().manual_seed(self.seed + self.epoch + 7919 * (self.rank + 1))
            return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return [idx[i : i + size] for i in range(0, len(idx), size)]

    def __iter__(self) -> Iterator[np.ndarray]:
        yield from self._batches()

    def __len__(self) -> int:
        return math.ceil(len(self._indices()) / self.batch_size)


def trim_padding(batch: dict[str, np.ndarray], max_len: int) -> dict[str, np.ndarray]:
    """Drop the leading memory columns that are padding in every case of ``batch``.

    With ``k`` such columns (of ``T = H + L``), the event fields lose their first ``k`` columns;
    when ``k > H`` the whole older history is padding and the ``L`` encoder positions shrink to
    ``L' = T - k``: the case fields keep their last ``L'`` columns, the window fields their last
    ``L'`` anchors, and ``window_start`` (memory coordinates) moves by ``-k``. A batch without
    such columns is returned as it is.
    """
    valid = batch["items"] > 0
    filled = valid.any(axis=0)
    k = int(filled.argmax()) if filled.any() else 0
    if k == 0:
        return batch
    keep_l = min(max_len, valid.shape[1] - k)
    out = {}
    for name, value in batch.items():
        if name in CASE_FIELDS and name != "users":
            out[name] = value[:, -keep_l:]
        elif name == "window_start":
            out[name] = value[:, :, -keep_l:] - k
        elif name in WINDOW_FIELDS:
            out[name] = value[:, :, -keep_l:]
        elif name in ("users", "seen", "case"):
            out[name] = value
        else:  # event fields and context: [B, T, ...]
            out[name] = value[:, k:]
    return out
