"""Batches for training and evaluation, gathered from the prepared CSR arrays.

A case is identified by its *anchor end* ``e`` (exclusive global event index) and its user's first
event ``s``: the encoder inputs are events ``[e - L, e)`` and the carried older history is
``[e - L - H, e - L)``, both clipped at ``s`` and left-padded with 0. Gathering is one vectorised
fancy-index per batch; nothing is copied per prefix.

- training case: ``e`` runs over chunk ends of each user's training range, so every training
  event after the first is a target exactly once (dense supervision, targets ``[e - L + 1, e]``);
- evaluation case: ``e`` is the target's index; the target is ``items[e]`` (the last column of
  ``targets``), and the items of ``[s, e)`` are the seen items that ranking may filter.

The fields, their shapes and meaning are declared once in :mod:`recsys_cli.contract.batch`.
Batches carry the context columns (``data.columns.context``) as ``context`` [B, T, C] only when
the data names some: without, their fields are exactly those of data without context columns.

With time-window scales, every batch also carries, for each scale and each of the ``L`` encoder
positions (anchors), the window's first member in memory coordinates (``window_start`` [B, S, L];
the window is ``[start, anchor]``) and its statistics (``scale_stats`` [B, S, L, F]). Both are
looked up from :func:`recsys_cli.data.window_features.compute_window_features`, computed once per
data module over each user's whole history; an anchor's features depend on events up to the anchor
only, so nothing at or after a target reaches its prediction.

With ``data.cold_items > 0`` a seeded fraction of the items is held out of training: training
cases, their window features and :meth:`SequenceDataModule.train_events` come from a *training
view* (:func:`recsys_cli.data.splits.training_view`: the training events without the held-out
items', CSR arrays of their own), evaluation cases from the full arrays, unchanged. With 0 the
training view is the prepared data itself (no copy).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Annotated, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from recsys_cli.contract.data_spec import DataSpec, type_transitions
from recsys_cli.contract.params import Fraction, NonNegativeInt, PositiveInt, Range
from recsys_cli.contract.scales import ScaleSet
from recsys_cli.data.batches import ShardedBatchSampler, trim_padding
from recsys_cli.data.formats.base import DatasetReader
from recsys_cli.data.prepare import prepare
from recsys_cli.data.prepared_data import PreparationConfig, PreparedData
from recsys_cli.data.splits import Split, held_out_items, training_view
from recsys_cli.data.tasks import NextItem, case_rng
from recsys_cli.data.window_features import WindowFeatures, compute_window_features, feature_names
from recsys_cli.errors import ConfigError

log = logging.getLogger(__name__)


def check_cold_items(value: object) -> float:
    """``data.cold_items`` as a float in [0, 1); a ConfigError naming the key otherwise."""
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if not 0 <= number < 1:
        raise ConfigError(
            f"data.cold_items={value!r}: the fraction of items held out of training must be a number "
            "in [0, 1), e.g. 0.1 (0 holds out none)"
        )
    return float(number)


class CaseBatches(Dataset):
    """Indexable by a list of case ids; returns one collated batch (see the module docstring)."""

    def __init__(
        self,
        data: PreparedData,
        ends: np.ndarray,
        starts: np.ndarray,
        max_len: int,
        history_len: int,
        evaluation: bool,
        features: WindowFeatures | None = None,
        users: np.ndarray | None = None,
        trim: bool = False,
        task: NextItem | None = None,
        kinds: np.ndarray | None = None,
        seed: int = 0,
    ):
        self.data, self.ends, self.starts = data, ends, starts
        # what the model reads and predicts of a case (recsys_cli.data.tasks): next item by default;
        # ``kinds`` [n]: the task's kind of each case (0: ordinary), ``seed``: its draws' seed
        self.task = task or NextItem()
        self.kinds = np.zeros(len(ends), dtype=np.int64) if kinds is None else kinds
        self.seed = seed
        self.trim = trim  # cut the memory columns that are padding in every case of a batch
        # the ``users`` field: user index + 1, or 0 for a user without training targets
        self.users = np.zeros(len(ends), dtype=np.int64) if users is None else users
        self.max_len, self.history_len, self.evaluation = max_len, history_len, evaluation
        self.features = features
        self._span = np.arange(-(max_len + history_len), 0)

    def __len__(self) -> int:
        return len(self.ends)

    def lengths(self) -> np.ndarray:
        """[n] each case's memory length (events of ``[e - L - H, e)`` within its user's history):
        what batches are bucketed by."""
        return np.minimum(self.ends - self.starts, self.max_len + self.history_len)

    def memory_fields(self, ends: np.ndarray, starts: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
        """The memory of cases ending before ``ends`` [B] (exclusive) of users starting at
        ``starts`` [B]: the event fields (and context, window fields) [B, H + L], their global
        indices ``idx`` [B, H + L] and which are events (``valid``; the rest is left padding)."""
        idx = ends[:, None] + self._span[None, :]  # [B, H + L] global event indices
        valid = idx >= starts[:, None]
        idx = np.where(valid, idx, 0)
        d = self.data
        batch = {
            "items": np.where(valid, d.items[idx], 0),
            "times": np.where(valid, d.times[idx], 0),
            "event_types": np.where(valid, d.event_types[idx], 0),
            "categories": np.where(valid, d.categories[idx], 0),
        }
        if d.context:  # [B, H + L, C]: the context columns in DataSpec.context_columns order
            batch["context"] = np.stack([np.where(valid, codes[idx], 0) for codes in d.context.values()], axis=-1)
        if self.features is not None:
            batch.update(self._window_fields(idx[:, -self.max_len :], valid[:, -self.max_len :], ends))
        return batch, idx, valid

    def seen_items(self, ends: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """[B, P] the items of ``[starts, ends)`` of each case, left-aligned, padded with 0."""
        lengths = ends - starts
        seen_idx = starts[:, None] + np.arange(lengths.max())[None, :]
        seen_valid = seen_idx < ends[:, None]
        return np.where(seen_valid, self.data.items[np.where(seen_valid, seen_idx, 0)], 0)

    def __getitem__(self, case_ids) -> dict[str, torch.Tensor]:
        case_ids = np.asarray(case_ids)
        ends, starts = self.ends[case_ids], self.starts[case_ids]
        batch, idx, valid = self.memory_fields(ends, starts)
        d = self.data
        batch["users"] = self.users[case_ids]
        if self.evaluation:
            batch["case"] = case_ids  # which evaluation case (per-case results name it)
            batch = self.task.query(self._eval_fields(batch, ends, starts), d.num_items + 1)
        else:  # the task's targets of the L encoder positions (and, for cloze, its masked inputs)
            rng = case_rng(self.seed, case_ids) if self.task.needs_rng() else None
            L = self.max_len
            batch = self.task.train_fields(batch, d, idx[:, -L:], valid[:, -L:], ends, self.kinds[case_ids], rng)
        if self.trim:
            batch = trim_padding(batch, self.max_len)
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}

    def _eval_fields(self, batch: dict, ends: np.ndarray, starts: np.ndarray) -> dict:
        """Evaluation's case fields: only the newest position is supervised, by the held-out event
        (``ends``); ``seen`` the items of the user's history before it."""
        d = self.data
        for field, values in (("targets", d.items), ("target_types", d.event_types), ("target_times", d.times)):
            column = np.zeros((len(ends), self.max_len), dtype=np.int64)
            column[:, -1] = values[ends]
            batch[field] = column
        batch["seen"] = self.seen_items(ends, starts)
        return batch

    def _window_fields(self, anchors: np.ndarray, valid: np.ndarray, ends: np.ndarray) -> dict:
        """``window_start`` [B, S, L] (memory coordinates) and ``scale_stats`` [B, S, L, F].

        anchors: [B, L] global indices of the encoder positions, valid: [B, L]. Memory slot 0 is
        global index ``end - (L + H)``; a window never reaches before it because a scale sees at
        most ``max_events <= H + 1`` events. A padded anchor gets an empty window (start = anchor
        + 1) and zero statistics.
        """
        L, H = self.max_len, self.history_len
        f = self.features
        at = np.where(valid, anchors, 0)
        start = f.starts[at] - (ends - (L + H))[:, None, None]  # [B, L, S]
        empty = np.arange(H + 1, H + L + 1)[None, :, None]
        start = np.where(valid[..., None], start, empty)
        stats = np.where(valid[..., None, None], f.stats[at], 0.0)  # [B, L, S, F]
        return {"window_start": start.transpose(0, 2, 1), "scale_stats": stats.transpose(0, 2, 1, 3)}


class SequenceDataModule(pl.LightningDataModule):
    """Prepares (cached) and splits a dataset and serves train / val / test batches."""

    def __init__(
        self,
        name: str,
        reader: DatasetReader | Callable[[], DatasetReader],
        preparation: dict | DictConfig,
        split: Callable[[PreparedData], Split],
        max_len: Annotated[int, Range(min=2)],
        batch_size: PositiveInt,
        eval_batch_size: PositiveInt,
        train_windows: Literal["all", "last"] = "all",
        num_workers: NonNegativeInt = 0,
        cache_dir: str | None = None,
        scales: ScaleSet | None = None,
        seed: int = 0,
        cold_items: Fraction = 0.0,
        bucket_pool: NonNegativeInt = 0,
        task: NextItem | None = None,
        **_: object,  # dataset keys the reader's config refers to (e.g. data.path)
    ):
        super().__init__()
        if max_len < 2:
            raise ConfigError(f"data.max_len={max_len}: the encoder needs at least 2 positions; use 2 or more")
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError("data.batch_size and data.eval_batch_size must be positive")
        if train_windows not in ("all", "last"):
            raise ConfigError(f"data.train_windows={train_windows!r}: use 'all' (every chunk) or 'last'")
        if isinstance(preparation, DictConfig):
            preparation = OmegaConf.to_container(preparation, resolve=True)
        self.cold_items = check_cold_items(cold_items)
        if not isinstance(bucket_pool, int) or isinstance(bucket_pool, bool) or bucket_pool < 0:
            raise ConfigError(
                f"data.bucket_pool={bucket_pool!r}: use 0 (batches of randomly ordered cases) or the "
                "number of batches whose cases are grouped by length, e.g. 50"
            )
        self.bucket_pool = bucket_pool
        # how a case becomes inputs and targets (``task=next_item|cloze``, recsys_cli.data.tasks);
        # None: next item (configs saved before tasks existed)
        self.task = task if task is not None else NextItem()
        self.name, self.reader, self.split_fn = name, reader, split
        self.preparation = PreparationConfig(**preparation)
        self.max_len, self.batch_size, self.eval_batch_size = max_len, batch_size, eval_batch_size
        self.train_windows, self.num_workers, self.cache_dir = train_windows, num_workers, cache_dir
        # the time-window scales the model reads (parsed once, from ``scales``, by the builder):
        # their features are computed here, once
        self.scale_set = scales or ScaleSet()
        self.scales = list(self.scale_set.windows)
        self.history_len, self.seed = self.scale_set.history_len(max_len), seed
        self.data: PreparedData | None = None
        self.split: Split | None = None
        self.features: WindowFeatures | None = None
        self._spec: DataSpec | None = None  # built once, on the first spec() after loading
        # what training cases are built from: the prepared data, or its training view
        self.train_data: PreparedData | None = None
        self.train_end: np.ndarray | None = None
        self.train_features: WindowFeatures | None = None
        self.held_out = np.zeros(0, dtype=np.int64)  # item ids held out of training (cold_items)
        self.held_out_events = 0  # their training events, removed from the training view

    # -- preparation -------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.load()

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def load(self) -> PreparedData:
        """Prepare (or load from cache) and split; idempotent."""
        if self.data is None:
            data = prepare(self.reader, self.preparation, self.cache_dir, self.name)
            self.split = self.split_fn(data)
            if self.scales:
                self.features = compute_window_features(data, self.scales)
            self._hold_out(data)
            self.data = data
        return self.data

    def _hold_out(self, data: PreparedData) -> None:
        """Set the training data: ``data`` itself, or (``cold_items > 0``) its training view."""
        self.train_data, self.train_end, self.train_features = data, self.split.train_end, self.features
        if self.cold_items == 0:
            return
        self.held_out = held_out_items(data.num_items, self.cold_items, self.seed)
        view, view_end = training_view(data, self.split.train_end, self.held_out)
        train_events = int((self.split.train_end - data.offsets[:-1]).sum())
        self.held_out_events = train_events - view.num_events
        self.train_data, self.train_end = view, view_end
        self.train_features = compute_window_features(view, self.scales) if self.scales else None
        log.info(
            "data.cold_items=%s: %d of %d items held out of training, with %d of %d training events",
            self.cold_items, len(self.held_out), data.num_items, self.held_out_events, train_events,
        )

    @property
    def num_items(self) -> int:
        return self.load().num_items

    def spec(self) -> DataSpec:
        """What the model, the objective and the reports need to know about the prepared data;
        built once (it copies the item fields and counts the training events)."""
        if self._spec is None:
            self._spec = self._build_spec()
        return self._spec

    def _build_spec(self) -> DataSpec:
        data = self.load()
        return DataSpec(
            num_items=data.num_items,
            num_users=data.num_users,
            max_len=self.max_len,
            scales=self.scale_set,
            event_types=tuple(str(v) for v in data.event_type_vocab),
            categories=tuple(str(v) for v in data.category_vocab),
            stat_names=tuple(feature_names(data)),
            has_time=data.has_time,
            item_titles=None if data.item_titles is None else tuple(data.item_titles),
            item_fields={name: tuple(values) for name, values in data.item_fields.items()},
            item_train_counts=np.bincount(self.train_events()[0], minlength=data.num_items + 1),
            held_out_items=self.held_out,
            type_transitions=self.type_transitions(),
            context_columns={name: len(data.context_vocab[name]) for name in data.context},
            mask_item=data.num_items + 1 if self.task.masks_inputs else 0,
        )

    def type_transitions(self) -> np.ndarray:
        """[K + 1, K + 1] counts of (type of a training event, type of the user's next training event)."""
        data = self.load()
        view, users = self.train_data, self.train_data.user_of_event
        train = np.arange(view.num_events) < self.train_end[users]
        types, users = view.event_types[train], users[train]
        same = users[1:] == users[:-1]
        return type_transitions(types[:-1][same], types[1:][same], data.num_event_types)

    # -- cases ---------------------------------------------------------------------------------
    def train_cases(self) -> CaseBatches:
        self.load()
        data = self.train_data
        ends, starts, users, kinds = self.task.train_cases(data.offsets[:-1], self.train_end, self.max_len, self.train_windows)
        if len(ends) == 0:
            raise ConfigError(f"dataset '{self.name}': the split leaves no training targets (users need more events)")
        return CaseBatches(
            data, ends, starts, self.max_len, self.history_len, False, self.train_features, users + 1, trim=True,
            task=self.task, kinds=kinds, seed=self.seed,
        )  # fmt: skip

    def known_users(self) -> np.ndarray:
        """[U] bool: users with at least one training target (a user embedding learns from them);
        the others (e.g. new users of a temporal split) are unknown to training."""
        self.load()
        return (self.train_end - self.train_data.offsets[:-1]) >= 2

    def eval_cases(self, stage: str) -> CaseBatches:
        data = self.load()
        targets = self.split.val_targets if stage == "val" else self.split.test_targets
        users = data.user_of_event[targets] if len(targets) else targets
        starts = data.offsets[users] if len(targets) else targets
        field = np.where(self.known_users()[users], users + 1, 0) if len(targets) else targets
        return CaseBatches(
            data, targets, starts, self.max_len, self.history_len, True, self.features, field, trim=True, task=self.task
        )

    def unknown_users(self, stage: str) -> int:
        """How many evaluation cases of ``stage`` belong to users unknown to training."""
        targets = self.split.val_targets if stage == "val" else self.split.test_targets
        return int((~self.known_users()[self.load().user_of_event[targets]]).sum()) if len(targets) else 0

    def train_events(self) -> tuple[np.ndarray, np.ndarray]:
        """(items, users): the [E_train] training events of the split, in time order per user
        (what count-based baselines are fitted on; no validation or test target is among them,
        nor any event of an item held out by ``cold_items``)."""
        self.load()
        data = self.train_data
        users = data.user_of_event
        train = np.arange(data.num_events) < self.train_end[users]
        return data.items[train], users[train]

    # -- loaders -------------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, cases: CaseBatches, batch_size: int, train: bool) -> DataLoader:
        rank, world = self._rank_world()
        # evaluation: cases in order of length (exact: metrics are sums); training: grouped by
        # length only with data.bucket_pool > 0 (it changes which cases share a batch)
        sampler = ShardedBatchSampler(
            len(cases), batch_size, shuffle=train, seed=self.seed, rank=rank, world=world, pad=train,
            lengths=cases.lengths(), bucket_pool=self.bucket_pool if train else 0,
        )  # fmt: skip
        return DataLoader(
            cases,
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_cases(), self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_cases("val"), self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_cases("test"), self.eval_batch_size, train=False)

    def summary(self) -> dict:
        """The data's sizes and split; with ``cold_items`` also what was held out of training."""
        data = self.load()
        summary = {
            "dataset": self.name,
            "users": data.num_users,
            "items": data.num_items,
            "events": data.num_events,
            "split": self.split.description,
            "train_cases": len(self.train_cases()),
            "val_cases": len(self.split.val_targets),
            "test_cases": len(self.split.test_targets),
        }
        # users of evaluation cases without training targets (a user embedding has no vector for them)
        summary["unknown_users"] = {stage: self.unknown_users(stage) for stage in ("val", "test")}
        if self.cold_items:
            summary["cold_items"] = {
                "fraction": self.cold_items,
                "items": len(self.held_out),
                "train_events": self.held_out_events,
            }
        return summary
