"""Next-behaviour prediction: which type of event (view / cart / buy ...) comes next.

A head on the user state gives ``ModelOutput.aux["behaviour_logits"]`` [B, L, K]: at every encoder
position, one logit per event type, class ``c`` = type ``c + 1`` (types are 1..K, 0 = unknown).

- :class:`BehaviourTerm` trains it (``objective.behaviour``, ``+objective/behaviour=type_ce``): the
  cross-entropy against ``batch["target_types"]`` at every position whose target type is known.
- :class:`BehaviourBaselines` are the two models the head must beat, both from the counts of
  :func:`recsys_cli.contract.data_spec.type_transitions`: the majority type, and the type-to-type Markov chain.
- :class:`BehaviourMetrics` evaluates the head and both baselines on the same cases: accuracy,
  macro-F1 and one-vs-rest ROC-AUC per type; :func:`sync_behaviour_distributed` gathers its cases
  over DDP ranks, like :func:`recsys_cli.training.metrics.sync_distributed` for the ranking metrics.
  The term registers them for every evaluation (:class:`BehaviourEvaluation`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_auroc,
    multiclass_accuracy,
    multiclass_f1_score,
)

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.output import ModelOutput
from recsys_cli.contract.params import NonNegative
from recsys_cli.errors import ConfigError
from recsys_cli.training.metrics import collective_device
from recsys_cli.training.objective import ObjectiveTerm, TermEvaluation

__all__ = [
    "BehaviourBaselines",
    "BehaviourEvaluation",
    "BehaviourMetrics",
    "BehaviourTerm",
    "sync_behaviour_distributed",
]

LOGITS_KEY = "behaviour_logits"


# -- the objective term ------------------------------------------------------------------------


class BehaviourTerm(ObjectiveTerm):
    """Cross-entropy of the next event's type, at every position whose target type is known.

    Reads ``output.aux["behaviour_logits"]`` [B, L, K] (class ``c`` = type ``c + 1``) and
    ``batch["target_types"]`` [B, L] (1..K; 0 = no target or unknown type: not supervised); the
    value is the mean over the supervised positions (0, still attached to the graph, when a batch
    has none, so that every parameter gets a gradient under DDP).
    """

    requires = frozenset({LOGITS_KEY})

    def __init__(self, weight: NonNegative = 1.0):
        super().__init__(weight)
        self.num_types: int | None = None

    def bind(self, spec: DataSpec) -> None:
        # A term switched off with weight 0 is dropped by the Objective; it must not fail here,
        # since weight=0 is exactly what the message below tells the user to set.
        if self.weight != 0 and spec.num_event_types < 2:
            raise ConfigError(
                f"objective.behaviour: the data has {spec.num_event_types} event type(s), so there "
                "is no next behaviour to predict; set objective.behaviour.weight=0 (or drop "
                "+objective/behaviour), or use a dataset with an event-type column"
            )
        self.num_types = spec.num_event_types

    def evaluation(self, spec: DataSpec) -> BehaviourEvaluation:
        """The head's metrics next to the majority-type and type-Markov baselines of ``spec``'s
        training events (``val/behaviour/accuracy``...)."""
        transitions = spec.type_transitions
        baselines = BehaviourBaselines(transitions) if transitions is not None else None
        return BehaviourEvaluation(BehaviourMetrics(spec.event_types, baselines))

    def __call__(self, output: ModelOutput, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        if LOGITS_KEY not in output.aux:
            raise KeyError(
                f"objective.behaviour needs ModelOutput.aux[{LOGITS_KEY!r}]; the model returned "
                f"aux keys {sorted(output.aux)}"
            )
        logits = output.aux[LOGITS_KEY]  # [B, L, K]
        types = batch["target_types"]  # [B, L]
        if logits.shape[:-1] != types.shape:
            raise ValueError(
                f"{LOGITS_KEY} has shape {tuple(logits.shape)}, expected [B, L, K] with "
                f"[B, L] = {tuple(types.shape)} (the shape of target_types)"
            )
        if self.num_types is not None and logits.shape[-1] != self.num_types:
            raise ValueError(
                f"{LOGITS_KEY} has {logits.shape[-1]} classes, the data has {self.num_types} event types"
            )
        sel = types > 0
        chosen = logits[sel].float()  # [M, K]
        if chosen.shape[0] == 0:
            return logits.sum() * 0.0, {}
        return F.cross_entropy(chosen, types[sel] - 1), {}


# -- baselines ---------------------------------------------------------------------------------


class BehaviourBaselines:
    """The majority type and the type-to-type Markov chain, from :func:`recsys_cli.contract.data_spec.type_transitions` counts.

    - ``overall`` [K]: the distribution of the next event's type over every counted pair (column
      sums of types 1..K; pairs whose next type is unknown are left out); uniform without counts.
    - :meth:`majority`: ``overall`` for every case. Its arg-max is :attr:`majority_type` (the most
      frequent next type; ties go to the smallest type). Its score for a type is the same for
      every case, so its one-vs-rest AUC is 0.5 for every type.
    - :meth:`markov`: P(next type | last event's type) = row ``last`` of the counts, normalised;
      a last type that has no counted successor, and the unknown last type 0, get ``overall``.

    Both return float64 probabilities [B, K] (column c = type c + 1), like a softmax of the head's
    logits, so :class:`BehaviourMetrics` scores them with the same metrics as the model.
    """

    def __init__(self, transitions: np.ndarray):
        counts = np.asarray(transitions, dtype=np.float64)
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] < 2:
            raise ValueError(
                f"transitions must be a [K + 1, K + 1] matrix with K >= 1, got shape {counts.shape}"
            )
        if (counts < 0).any():
            raise ValueError("transitions must be counts (no negative value)")
        self.num_types = counts.shape[0] - 1
        known = counts[:, 1:]  # [K + 1, K]: next types 1..K
        col = known.sum(axis=0)
        overall = col / col.sum() if col.sum() > 0 else np.full(self.num_types, 1.0 / self.num_types)
        rows = known.sum(axis=1, keepdims=True)  # [K + 1, 1]
        table = np.where(rows > 0, known / np.maximum(rows, 1.0), overall)
        table[0] = overall  # unknown last type
        self.overall = torch.as_tensor(overall, dtype=torch.float64)  # [K]
        self.table = torch.as_tensor(table, dtype=torch.float64)  # [K + 1, K]: row = last type
        self.majority_type = int(np.argmax(overall)) + 1

    def _check(self, last_types: Tensor) -> Tensor:
        last = torch.as_tensor(last_types).long().reshape(-1)
        if last.numel() and (int(last.min()) < 0 or int(last.max()) > self.num_types):
            raise ValueError(
                f"last_types must lie in 0..{self.num_types}, got values in "
                f"{int(last.min())}..{int(last.max())}"
            )
        return last

    def majority(self, last_types: Tensor) -> Tensor:
        """[B, K] the overall next-type distribution for each case (``last_types`` only sizes B)."""
        last = self._check(last_types)
        return self.overall.to(last.device).expand(last.shape[0], -1).clone()

    def markov(self, last_types: Tensor) -> Tensor:
        """[B, K] P(next type | the case's last event type); ``last_types`` [B] in 0..K."""
        last = self._check(last_types)
        if self.table.device != last.device:
            self.table = self.table.to(last.device)
        return self.table[last]


# -- evaluation metrics ------------------------------------------------------------------------


def _empty_state(num_types: int, device: torch.device) -> dict[str, Tensor]:
    return {
        "logits": torch.zeros(0, num_types, dtype=torch.float32, device=device),
        "targets": torch.zeros(0, dtype=torch.int64, device=device),
        "last_types": torch.zeros(0, dtype=torch.int64, device=device),
    }


class BehaviourMetrics:
    """Accuracy, macro-F1 and per-type ROC-AUC of the next event's type: the head and the baselines.

    Every evaluation case is kept (its K logits, its target type and the type of its last memory
    event): evaluation sets have one case per user, so this is small, and it makes every metric
    exact (AUC needs all scores; no binning). The numbers are computed at :meth:`compute` with
    ``torchmetrics.functional``. Under DDP, :func:`sync_behaviour_distributed` all-gathers the
    cases of every rank first (plain tensors rather than torchmetrics ``Metric`` objects, so the
    collective happens at one explicit point that every rank reaches, like the ranking metrics).

    Per model (the head ``behaviour/``, and with ``baselines`` also ``behaviour/majority/`` and
    ``behaviour/markov/``; the head's probabilities are the softmax of its logits):

    - ``accuracy``: share of cases whose arg-max type is the target type (NaN without cases);
    - ``macro_f1``: the unweighted mean of the K types' F1 (torchmetrics
      ``multiclass_f1_score(average="macro")``, which is also scikit-learn's default): a type that
      is neither a target nor predicted in any case has no F1 and is left out of the mean; a type
      that is predicted but never a target (or a target but never predicted) has F1 0 and counts;
    - ``auc/<type name>``: one-vs-rest ROC-AUC of the type's probability, i.e.
      P(score of a case of that type > score of a case of another type) + 0.5 P(tie). A type that
      is the target of no case, or of every case, has no AUC: the key is left out (never NaN,
      like an empty frequency bucket of the ranking metrics). The majority baseline scores every
      case alike, so its AUC is 0.5.

    ``behaviour/cases`` is the number of cases (an int). Cases whose target type is 0 (unknown)
    are skipped at :meth:`update`.
    """

    def __init__(
        self,
        type_names: Sequence[str],
        baselines: BehaviourBaselines | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.type_names = tuple(str(name) for name in type_names)
        self.num_types = len(self.type_names)
        if self.num_types < 1:
            raise ValueError("BehaviourMetrics needs at least one event type name")
        if baselines is not None and baselines.num_types != self.num_types:
            raise ValueError(
                f"baselines know {baselines.num_types} event types, the metrics {self.num_types}"
            )
        self.baselines = baselines
        self._device = torch.device(device) if device is not None else None
        self._chunks: list[dict[str, Tensor]] = []

    # -- state -------------------------------------------------------------------------------

    def _device_or_cpu(self) -> torch.device:
        return self._device if self._device is not None else torch.device("cpu")

    def state(self) -> dict[str, Tensor]:
        """The cases so far: ``logits`` float32 [n, K], ``targets`` and ``last_types`` int64 [n]."""
        if not self._chunks:
            return _empty_state(self.num_types, self._device_or_cpu())
        if len(self._chunks) > 1:
            self._chunks = [{k: torch.cat([c[k] for c in self._chunks]) for k in self._chunks[0]}]
        return {name: t.clone() for name, t in self._chunks[0].items()}

    def load_state(self, state: dict[str, Tensor]) -> None:
        """Replace the cases by ``state`` (as returned by :meth:`state`)."""
        if set(state) != {"logits", "targets", "last_types"}:
            raise ValueError(f"state keys {sorted(state)} are not logits, targets, last_types")
        logits = torch.as_tensor(state["logits"])
        n = logits.shape[0]
        if logits.shape != (n, self.num_types) or any(
            torch.as_tensor(state[k]).shape != (n,) for k in ("targets", "last_types")
        ):
            raise ValueError(
                f"state shapes {[tuple(torch.as_tensor(v).shape) for v in state.values()]} do not "
                f"match [n, {self.num_types}], [n], [n]"
            )
        device = self._device_or_cpu()
        self._chunks = [
            {
                "logits": logits.to(device=device, dtype=torch.float32).clone(),
                "targets": torch.as_tensor(state["targets"]).to(device=device, dtype=torch.int64).clone(),
                "last_types": torch.as_tensor(state["last_types"]).to(device=device, dtype=torch.int64).clone(),
            }
        ]

    def reset(self) -> None:
        """Forget all cases."""
        self._chunks = []

    @property
    def count(self) -> int:
        """Number of cases accumulated so far."""
        return sum(int(c["targets"].shape[0]) for c in self._chunks)

    # -- accumulation ------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, logits: Tensor, target_types: Tensor, last_types: Tensor) -> None:
        """Add one batch of cases.

        Args:
            logits: [B, K] the head's logits of the next event's type (class c = type c + 1).
            target_types: [B] the type of the held-out event, 1..K; 0 (unknown): case skipped.
            last_types: [B] the type of each case's newest memory event, 0..K (the Markov
                baseline conditions on it; 0 = unknown).
        """
        if logits.dim() != 2 or logits.shape[1] != self.num_types:
            raise ValueError(
                f"logits must have shape [B, {self.num_types}], got {tuple(logits.shape)}"
            )
        b = logits.shape[0]
        for name, t in (("target_types", target_types), ("last_types", last_types)):
            if t.shape != (b,):
                raise ValueError(f"{name} must have shape [{b}], got {tuple(t.shape)}")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) > self.num_types):
                raise ValueError(
                    f"{name}: types must lie in 0..{self.num_types}, got values in "
                    f"{int(t.min())}..{int(t.max())}"
                )
        if self._device is None:
            self._device = logits.device
        device = self._device
        keep = target_types.to(logits.device) > 0
        self._chunks.append(
            {
                "logits": logits.detach()[keep].to(device=device, dtype=torch.float32),
                "targets": target_types.to(logits.device)[keep].to(device=device, dtype=torch.int64),
                "last_types": last_types.to(logits.device)[keep].to(device=device, dtype=torch.int64),
            }
        )

    # -- results -----------------------------------------------------------------------------

    def _scores(self, prefix: str, probs: Tensor, target0: Tensor) -> dict[str, float]:
        """Metrics of probabilities [n, K] against 0-based targets [n]."""
        n, k = probs.shape
        if n == 0:
            return {f"{prefix}accuracy": math.nan, f"{prefix}macro_f1": math.nan}
        result = {
            f"{prefix}accuracy": float(
                multiclass_accuracy(probs, target0, num_classes=k, average="micro")
            ),
            f"{prefix}macro_f1": float(
                multiclass_f1_score(probs, target0, num_classes=k, average="macro")
            ),
        }
        for c, name in enumerate(self.type_names):
            positive = (target0 == c).long()
            support = int(positive.sum())
            if 0 < support < n:
                result[f"{prefix}auc/{name}"] = float(binary_auroc(probs[:, c], positive))
        return result

    def compute(self) -> dict[str, float]:
        """``behaviour/cases``, then the head's metrics and each baseline's (class docstring)."""
        state = self.state()
        target0 = state["targets"] - 1
        last = state["last_types"]
        result: dict[str, float] = {"behaviour/cases": int(target0.shape[0])}
        probs = torch.softmax(state["logits"].double(), dim=1)
        result.update(self._scores("behaviour/", probs, target0))
        if self.baselines is not None:
            result.update(self._scores("behaviour/majority/", self.baselines.majority(last), target0))
            result.update(self._scores("behaviour/markov/", self.baselines.markov(last), target0))
        return result

    def __repr__(self) -> str:
        return f"BehaviourMetrics(types={list(self.type_names)}, count={self.count})"


class BehaviourEvaluation(TermEvaluation):
    """:class:`BehaviourMetrics` of every evaluation batch: the head's logits at the newest
    position against the held-out event's type, conditioned on the newest memory event's type."""

    def __init__(self, metrics: BehaviourMetrics):
        self.metrics = metrics

    def reset(self) -> None:
        self.metrics.reset()

    def update(self, output: ModelOutput, batch: Batch) -> None:
        if LOGITS_KEY in output.aux:
            logits = output.aux[LOGITS_KEY][:, -1]  # [B, K]: the type of the held-out event
            self.metrics.update(logits, batch["target_types"][:, -1], batch["event_types"][:, -1])

    def sync(self) -> None:
        sync_behaviour_distributed(self.metrics)

    def compute(self) -> dict[str, float]:
        return self.metrics.compute() if self.metrics.count else {}


def sync_behaviour_distributed(metrics: BehaviourMetrics) -> None:
    """All-gather ``metrics``' cases over the default process group; a no-op without one.

    Afterwards every rank holds every rank's cases (in rank order) and computes the numbers a
    single process would have, provided the ranks evaluated disjoint cases (as for
    :func:`recsys_cli.training.metrics.sync_distributed`). Every rank must call it (it is a
    collective), including ranks that saw no case; ranks may hold different numbers of cases.
    """
    import torch.distributed as dist
    from torchmetrics.utilities.distributed import gather_all_tensors

    if not (dist.is_available() and dist.is_initialized()):
        return
    state = metrics.state()
    comm_device = collective_device(torch.device("cpu"))
    gathered = {
        name: torch.cat(gather_all_tensors(value.to(comm_device))) for name, value in state.items()
    }
    metrics.load_state(gathered)
