"""Tasks: how a training case becomes inputs and targets, and how an evaluation case is queried.

``task=next_item | cloze`` (``conf/task/``). The data module gathers a case's events (the memory
of :mod:`recsys_cli.data.datamodule`); its task then decides what the model reads and what it is
trained to predict, so the model and the objective terms are the same for every task: a term
reads ``targets`` [B, L] (0 = not supervised) and scores the state at each supervised position.

- :class:`NextItem` (the default): every position predicts the next event of the training range;
  an evaluation case is the history before the held-out event, read at its newest position.
- :class:`Cloze` (BERT4Rec, Sun et al. CIKM 2019): a training case is a run of ``L`` events whose
  positions are each masked with probability ``mask_prob`` (at least one per case); a masked
  position's item becomes the id ``N + 1``, which the model reads as a learned [MASK] vector
  outside the scoring table (never a candidate), its type, category and context values 0
  (unknown), and it is the only kind of position with a target: the item it hid. As BERT4Rec, each
  user also gets one case with only its newest training event masked (``last_item_cases``), the
  shape of an evaluation query. An evaluation case appends a [MASK] slot after the history (the
  last ``L - 1`` events), at the time of the newest event; its state scores the catalogue.

The masks are drawn from a generator seeded by the run's seed and the batch's case ids: a resumed
run draws the same masks for the same batches, and a case drawn into another batch in another
epoch gets fresh ones.
"""

from __future__ import annotations

import zlib

import numpy as np
from omegaconf import DictConfig, OmegaConf

from recsys_cli.contract.batch import EVENT_FIELDS
from recsys_cli.contract.params import Fraction
from recsys_cli.contract.scales import ScaleSet
from recsys_cli.errors import ConfigError


class NextItem:
    """Every position predicts the next event (``task=next_item``)."""

    masks_inputs = False

    def train_cases(self, starts: np.ndarray, train_end: np.ndarray, max_len: int, windows: str) -> tuple:
        """Anchor ends (exclusive: the inputs end just before them), user starts, user indices and
        kinds (0: the task's ordinary case) of the training cases."""
        ends, starts, users = next_item_case_ends(starts, train_end, max_len, windows)
        return ends, starts, users, np.zeros(len(ends), dtype=np.int64)

    def train_fields(self, batch: dict, data, idx: np.ndarray, valid: np.ndarray, ends: np.ndarray,
                     kinds: np.ndarray, rng: np.random.Generator | None) -> dict:  # fmt: skip
        """The targets of the ``L`` encoder positions (``idx``, ``valid`` [B, L]: their global event
        indices): the next event, if it is in the training range."""
        nxt = np.minimum(idx + 1, len(data.items) - 1)
        has_next = valid & (idx + 1 <= ends[:, None])
        batch["targets"] = np.where(has_next, data.items[nxt], 0)
        batch["target_types"] = np.where(has_next, data.event_types[nxt], 0)
        batch["target_times"] = np.where(has_next, data.times[nxt], 0)
        return batch

    def query(self, batch: dict, mask_item: int) -> dict:
        """An evaluation batch as the model reads it: as gathered."""
        return batch

    def needs_rng(self) -> bool:
        return False


def next_item_case_ends(starts: np.ndarray, train_end: np.ndarray, max_len: int, windows: str) -> tuple:
    """Anchor ends (exclusive index of the last input + 1), user starts and user indices of
    next-item training cases.

    A user with training events ``[s, end)`` yields cases with inputs ending at ``end - 1``,
    ``end - 1 - L``, ... as long as a case has at least one target; with ``windows='last'`` only the
    newest chunk is used (the classic SASRec sampling).
    """
    n_targets = np.maximum(train_end - starts - 1, 0)
    return _chunk_ends(starts, train_end - 1, n_targets, max_len, windows)


def _chunk_ends(starts: np.ndarray, last_end: np.ndarray, covered: np.ndarray, max_len: int, windows: str) -> tuple:
    """Cases of ``max_len`` inputs ending at ``last_end``, ``last_end - L``... until ``covered``
    events of each user are; ``windows='last'``: the newest one only."""
    chunks = np.ceil(covered / max_len).astype(np.int64)
    if windows == "last":
        chunks = np.minimum(chunks, 1)
    user = np.repeat(np.arange(len(starts)), chunks)
    k = np.arange(chunks.sum()) - np.repeat(np.cumsum(chunks) - chunks, chunks)
    ends = last_end[user] - k * max_len
    return ends.astype(np.int64), starts[user].astype(np.int64), user.astype(np.int64)


class Cloze(NextItem):
    """BERT4Rec's masked-item task (``task=cloze``; see the module docstring)."""

    masks_inputs = True
    LAST_ITEM = 1  # the kind of a case whose newest event alone is masked

    def __init__(self, mask_prob: Fraction = 0.2, last_item_cases: bool = True):
        if not 0 < mask_prob < 1:
            raise ConfigError(f"task.mask_prob={mask_prob!r}: use a probability in (0, 1), e.g. 0.2 (BERT4Rec's)")
        self.mask_prob, self.last_item_cases = float(mask_prob), bool(last_item_cases)

    def train_cases(self, starts: np.ndarray, train_end: np.ndarray, max_len: int, windows: str) -> tuple:
        """Runs of ``L`` events ending at the newest training event (inclusive: anchor end
        ``train_end``), then ``train_end - L``..., covering every training event of users with two
        or more; with ``last_item_cases``, each such user's newest run once more (kind 1)."""
        n = train_end - starts
        covered = np.where(n >= 2, n, 0)
        ends, case_starts, users = _chunk_ends(starts, train_end, covered, max_len, windows)
        kinds = np.zeros(len(ends), dtype=np.int64)
        if self.last_item_cases:
            last = np.flatnonzero(covered > 0)
            ends = np.concatenate([ends, train_end[last]])
            case_starts = np.concatenate([case_starts, starts[last]])
            users = np.concatenate([users, last])
            kinds = np.concatenate([kinds, np.full(len(last), self.LAST_ITEM)])
        return ends, case_starts, users, kinds

    def needs_rng(self) -> bool:
        return True

    def masked_positions(self, valid: np.ndarray, kinds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """[B, L] bool: each valid position with probability ``mask_prob``, and one drawn among a
        row's valid positions when none was; a last-item case: its newest position only."""
        masked = (rng.random(valid.shape) < self.mask_prob) & valid
        count = valid.sum(1)
        empty = np.flatnonzero(~masked.any(1) & (count > 0))
        if len(empty):  # the k-th valid position of the row, k uniform over its valid ones
            k = (rng.random(len(empty)) * count[empty]).astype(np.int64)
            column = np.argmax(np.cumsum(valid[empty], 1) > k[:, None], axis=1)
            masked[empty, column] = True
        last = kinds == self.LAST_ITEM
        masked[last] = False
        masked[last, -1] = valid[last, -1]
        return masked

    def train_fields(self, batch: dict, data, idx: np.ndarray, valid: np.ndarray, ends: np.ndarray,
                     kinds: np.ndarray, rng: np.random.Generator | None) -> dict:  # fmt: skip
        """Masks the encoder positions (``idx``, ``valid`` [B, L]) and makes the hidden events the
        targets: ``targets``, ``target_types`` and ``target_times`` of a masked position are its
        own event's; every other position has none (0)."""
        masked = self.masked_positions(valid, kinds, rng)
        L = valid.shape[1]
        batch["targets"] = np.where(masked, batch["items"][:, -L:], 0)
        batch["target_types"] = np.where(masked, batch["event_types"][:, -L:], 0)
        batch["target_times"] = np.where(masked, batch["times"][:, -L:], 0)
        hide_events(batch, masked, data.num_items + 1)
        return batch

    def query(self, batch: dict, mask_item: int) -> dict:
        """The history's last ``L - 1`` events and a [MASK] slot at the time of the newest one."""
        return append_query_slot(batch, mask_item)


def hide_events(batch: dict, masked: np.ndarray, mask_item: int) -> None:
    """In place: the masked encoder positions (``masked`` [B, L], the last L memory columns) read
    the [MASK] id as their item and nothing of their event (type, category, context: 0 =
    unknown); their time stays (when the hidden event happened is part of the question)."""
    L = masked.shape[1]
    batch["items"][:, -L:][masked] = mask_item
    for name in ("event_types", "categories"):
        batch[name][:, -L:][masked] = 0
    if "context" in batch:
        batch["context"][:, -L:][masked] = 0


def append_query_slot(batch: dict, mask_item: int) -> dict:
    """An evaluation batch with its memory moved one column left and a [MASK] slot appended as the
    newest position: the item ``mask_item``, the newest event's time, unknown type, category and
    context. Targets, users and ``seen`` stay: the slot is what predicts the held-out event."""
    out = dict(batch)
    for name in (*EVENT_FIELDS, "context"):
        if name not in batch:
            continue
        value = batch[name]
        slot = np.zeros_like(value[:, -1:])
        if name == "items":
            slot[:] = mask_item
        elif name == "times":
            slot = value[:, -1:].copy()
        out[name] = np.concatenate([value[:, 1:], slot], axis=1)
    return out


def case_rng(seed: int, case_ids: np.ndarray) -> np.random.Generator:
    """The generator of one batch's draws: seeded by the run's seed and the batch's case ids."""
    key = zlib.crc32(np.ascontiguousarray(case_ids, dtype=np.int64).tobytes())
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, key])


# objective terms a cloze model may train with: they read targets, whatever they mean
CLOZE_TERMS = ("next_item",)


def check_task(cfg: DictConfig, scales: ScaleSet) -> None:
    """Before preparation: the settings a task cannot be combined with, one ConfigError line.

    A cloze model's targets are the masked events themselves, not the next ones, so what reads
    next-event targets or needs a causal encoder's input does not fit: the time-window scales
    (their windows and statistics are built around next-event anchors, and an evaluation's query
    slot has none), objective terms other than the next-item term (the behaviour head, the
    variational latent's next-k reconstruction), the request-time context (it reads the target's
    time) and models other than the sequence model. A bidirectional encoder must train by cloze
    (by next item, each position would read its own target).
    """
    task = OmegaConf.select(cfg, "task._target_", default=None)
    causal = OmegaConf.select(cfg, "model.encoder.causal", default=True)
    if task is None or not str(task).endswith(".Cloze"):
        if causal is False:
            raise ConfigError(
                "model.encoder.causal=false (a bidirectional encoder) trains only with task=cloze: by next "
                "item each position would read the event it predicts; add task=cloze (or use model/encoder=bert)"
            )
        return
    terms = [str(n) for n, node in cfg.objective.items() if n not in CLOZE_TERMS and node.get("weight", 1.0) != 0]
    sequence = str(OmegaConf.select(cfg, "model._target_", default="")).endswith(".SequenceRecommender")
    problems = [
        *(["scales (use scales=none)"] if len(scales) else []),
        *([f"objective.{t} (set objective.{t}.weight=0)" for t in terms]),
        *(["model.context_request_time"] if sequence and OmegaConf.select(cfg, "model.context_request_time") else []),
        *([] if sequence else [f"the model {str(OmegaConf.select(cfg, 'model._target_')).rsplit('.', 1)[-1]} (use model=sequential)"]),
    ]
    if problems:
        raise ConfigError(
            "task=cloze predicts masked events, not next ones, and cannot be combined with "
            f"{', '.join(problems)}; it trains the sequence model with the next-item term only"
        )

