"""Context features of each behaviour, embedded and added to its event vector (``model.context``).

A ``model.state`` part (:class:`ContextFeatures`): it adds to every event's input vector and, with
``model.context_request_time=true``, to the user state.

Features of a past event (it is known when the next one is predicted):

- ``hour``: the hour of day of the event (UTC), 24 values;
- ``weekday``: its day of the week (UTC), 7 values;
- ``gap``: the time since the user's previous event, bucketed on a log scale (bucket ``1 +
  floor(log2(1 + seconds))``: 1 s, 2-3 s, 4-7 s, ... up to years; the user's first event has
  its own bucket);
- ``event_type`` and ``category``: the event's behaviour type and its item's category (the
  columns the reader gives; embedded by the ``model.inputs`` parts of
  :mod:`recsys_cli.models.parts.side`, which ``model.use_event_types`` / ``model.use_categories``
  also switch on);
- any categorical column the data config names (``data.columns.context={device: device_type}``):
  its values, coded 1..V by preparation, carried by batches as ``context``.

The event being predicted is never an input: its features are not in the memory. Only with
``model.context_request_time=true`` the *time* of the request (the target event's hour, weekday
and gap since the last event) is embedded and added to the user state, as a serving system that
knows when the user came back would do. It is legitimate when serving and a leak in offline
evaluation (the gap tells how soon the user came back), so runs print it above their metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.params import NonNegative
from recsys_cli.errors import ConfigError
from recsys_cli.models.parts.base import ModelPart
from recsys_cli.models.parts.side import side_table

TIME_FEATURES = ("hour", "weekday", "gap")
COLUMN_FEATURES = ("event_type", "category")
FEATURES = (*TIME_FEATURES, *COLUMN_FEATURES)
GAP_BUCKETS = 40  # padding, 38 log2 buckets (the last from 2**37 s, 4,000 years, on), no previous event
SECONDS_PER_DAY = 86_400


def gap_bucket(seconds: torch.Tensor) -> torch.Tensor:
    """Log-scale bucket of a time gap in seconds: ``1 + floor(log2(1 + seconds))`` (>= 1)."""
    # 1..GAP_BUCKETS - 2; GAP_BUCKETS - 1 is the first event's (no gap), 0 padding
    return 1 + torch.floor(torch.log2(1 + seconds.clamp(min=0).double())).long().clamp(max=GAP_BUCKETS - 3)


def time_features(times: torch.Tensor, previous: torch.Tensor, has_previous: torch.Tensor) -> dict[str, torch.Tensor]:
    """Indices (0 = padding) of the hour, weekday and gap bucket of events at unix ``times``.

    ``previous``: the time of the user's event before each one; ``has_previous``: whether there
    is one (without, the gap gets its own index, ``GAP_BUCKETS - 1``).
    """
    hour = 1 + torch.div(times % SECONDS_PER_DAY, 3600, rounding_mode="floor")
    weekday = 1 + (torch.div(times, SECONDS_PER_DAY, rounding_mode="floor") + 3) % 7  # 1970-01-01 was a Thursday
    gap = torch.where(has_previous, gap_bucket(times - previous), torch.full_like(times, GAP_BUCKETS - 1))
    return {"hour": hour, "weekday": weekday, "gap": gap}


class ContextFeatures(ModelPart):
    """Adds the embedded context of every memory event to its vector; optionally the request's
    time to the user state.

    ``features``: names from :data:`FEATURES` and the data's context columns; ``event_type`` and
    ``category`` are embedded by the side-feature parts (:mod:`recsys_cli.models.parts.side`), so
    this part builds tables for the others only (none at all: no table, no random draw), each
    started at ``init_std`` (``model.init_std``; :func:`~recsys_cli.models.parts.side.side_table`).
    """

    sizes = {"hour": 24, "weekday": 7, "gap": GAP_BUCKETS - 1}

    def __init__(
        self,
        spec: DataSpec,
        dim: int,
        features: Sequence[str] = (),
        request_time: bool = False,
        init_std: NonNegative | None = 0.02,
    ):
        super().__init__()
        features = [f for f in features if f not in COLUMN_FEATURES]
        columns = dict(spec.context_columns)
        unknown = [f for f in features if f not in FEATURES and f not in columns]
        if unknown:
            named = f"; the data's context columns: {', '.join(columns)}" if columns else (
                "; a column of the events can be named with data.columns.context={name: column}"
            )
            raise ConfigError(
                f"model.context: unknown feature(s) {', '.join(map(repr, unknown))}; "
                f"valid ones are {', '.join(FEATURES)}{named}"
            )
        timed = [f for f in features if f in TIME_FEATURES]
        if (timed or request_time) and not spec.has_time:
            what = ", ".join(timed) or "context_request_time"
            raise ConfigError(
                f"model.context: {what} need event times, but this dataset has none (times are "
                "positions); remove them from model.context or use data with a timestamp column"
            )
        self.features = timed
        self.request_time = request_time
        # the data's columns: (name, position in batch["context"]) in the order asked for
        order = list(columns)
        self.columns = [(f, order.index(f)) for f in features if f in columns]
        sizes = {**self.sizes, **columns}
        names = [*(TIME_FEATURES if request_time else timed), *(f for f, _ in self.columns)]
        self.tables = nn.ModuleDict({f: side_table(sizes[f] + 1, dim, init_std) for f in dict.fromkeys(names)})

    def _embed(self, indices: dict[str, torch.Tensor], names: tuple[str, ...] | list[str], valid: torch.Tensor) -> torch.Tensor:
        out = 0
        for name in names:
            out = out + self.tables[name](indices[name] * valid)
        return out

    def embed(self, batch: Batch) -> torch.Tensor | None:
        """[B, T, D] context vectors of the memory events (None without event features)."""
        out: torch.Tensor | int = 0
        valid = batch["items"] > 0
        if self.features:
            times = batch["times"]
            previous = torch.nn.functional.pad(times[:, :-1], (1, 0))
            has_previous = torch.nn.functional.pad(valid[:, :-1], (1, 0), value=False)
            out = self._embed(time_features(times, previous, has_previous), self.features, valid.long())
        for name, j in self.columns:
            out = out + self.tables[name](batch["context"][..., j] * valid)
        return None if isinstance(out, int) else out

    def forward(self, z: torch.Tensor, batch: Batch, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        """With ``request_time``: adds the context of the request after each of the last A
        positions (the target event's time features) to the states z [B, A, D]."""
        if not self.request_time:
            return z
        return z + self._request(batch, z.shape[1])

    def _request(self, batch: Batch, length: int) -> torch.Tensor:
        """[B, length, D] time features of the targets of the last ``length`` positions."""
        target_times = batch["target_times"][:, -length:]  # [B, length]
        last = batch["times"][:, -length:]
        has_target = target_times > 0
        has_previous = (batch["items"][:, -length:] > 0) & has_target
        features = time_features(target_times, last, has_previous)
        return self._embed(features, TIME_FEATURES, has_target.long())
