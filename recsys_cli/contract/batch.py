"""The batch schema: one name, one shape and one meaning per field, for training and evaluation.

A batch is a ``dict[str, Tensor]`` (what a DataLoader moves between devices) whose keys are the
fields below; :class:`Batch` declares them for type checkers and readers. Every case carries a
memory of ``T = H + L`` events, left-padded with 0, newest last: ``L`` encoder inputs
(``data.max_len``) preceded by ``H`` older events that only the time-window scales read.

====================  ==============  ==========================================================
field                 shape           meaning
====================  ==============  ==========================================================
``items``             [B, T] int64    item index of each memory event (1..N; 0 = padding; N + 1 =
                                      [MASK], an input hidden by ``task=cloze``: see
                                      ``DataSpec.mask_item``)
``times``             [B, T] int64    its time (unix seconds, or its position without timestamps)
``event_types``       [B, T] int64    its behaviour type (1..K; 0 = unknown)
``categories``        [B, T] int64    its category (1..C; 0 = unknown)
``context``           [B, T, C]       int64: its value of each context column (C columns named by
                                      ``data.columns.context``, in ``DataSpec.context_columns``
                                      order; 1..V; 0 = missing or padding); only when C > 0
``targets``           [B, L] int64    the item to predict at each encoder position (0 = not
                                      supervised), as the task (``task=``) sets it: by next item
                                      every next training event, by cloze the masked events
                                      themselves; in evaluation only the last column, the
                                      held-out item
``target_types``      [B, L] int64    the behaviour type of each target event (1..K; 0 = no target
                                      or unknown type), aligned with ``targets``
``target_times``      [B, L] int64    the time of each target event (0 = no target); only
                                      ``model.context_request_time=true`` reads it
``users``             [B] int64       the user's index + 1 when the user has training targets,
                                      0 for a user unknown to training (cold user)
``window_start``      [B, S, L] int64 first event of each scale's window at each encoder position,
                                      in memory coordinates (window = [start, anchor]); scales only
``scale_stats``       [B, S, L, F]    each window's statistics (float32; names in
                                      ``DataSpec.stat_names``); scales only
``seen``              [B, P] int64    evaluation only: the items of the user's whole history before
                                      the target (ranking may filter them), padded with 0
``case``              [B] int64       evaluation only: the case's index among the stage's cases
                                      (what per-case results are matched to users and targets by)
====================  ==============  ==========================================================
"""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor

EVENT_FIELDS = ("items", "times", "event_types", "categories")
WINDOW_FIELDS = ("window_start", "scale_stats")
CASE_FIELDS = ("targets", "target_types", "target_times", "users")
TRAIN_FIELDS = (*EVENT_FIELDS, *CASE_FIELDS)
EVAL_FIELDS = (*EVENT_FIELDS, *CASE_FIELDS, "seen", "case")


class Batch(TypedDict, total=False):
    """The fields of a batch (see the module docstring for shapes and meaning)."""

    items: Tensor
    times: Tensor
    event_types: Tensor
    categories: Tensor
    context: Tensor
    targets: Tensor
    target_types: Tensor
    target_times: Tensor
    users: Tensor
    window_start: Tensor
    scale_stats: Tensor
    seen: Tensor
    case: Tensor


def eval_targets(batch: Batch) -> Tensor:
    """[B] the held-out item of each evaluation case (the last column of ``targets``)."""
    return batch["targets"][:, -1]
