"""The training objective: a weighted sum of named terms chosen in config.

``objective`` in the config maps a term name to the term (``objective/next_item=full_ce`` chooses the
next-item term; later terms add themselves the same way, each with a ``weight``). Every term is
called as ``term(output, batch) -> (value, logs)``: it reads the :class:`ModelOutput` and the batch
and returns a scalar and optional extra values to log; the module adds ``weight * value`` over the
terms, logs each value as ``train/<term>`` and each extra value as ``train/<key>``. A term whose
weight is 0 is not computed.

A term that reads an auxiliary output of the model declares it (:attr:`ObjectiveTerm.requires`):
the model builds the part that gives it, and :meth:`Objective.check_outputs` says in one line when a
model cannot. A term whose output needs metrics of its own at evaluation registers them
(:meth:`ObjectiveTerm.evaluation`, a :class:`TermEvaluation`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.output import ModelOutput
from recsys_cli.errors import ConfigError


class TermEvaluation(ABC):
    """Metrics a term adds to every evaluation (validation, test) next to the ranking metrics.

    The module calls :meth:`reset` before an evaluation, :meth:`update` with every batch's output,
    then on every rank :meth:`sync` (gather the cases of every DDP rank; a collective) and
    :meth:`compute`.
    """

    @abstractmethod
    def reset(self) -> None:
        """Forget every case."""

    @abstractmethod
    def update(self, output: ModelOutput, batch: Batch) -> None:
        """Add the cases of one evaluation batch (the newest position of each row)."""

    def sync(self) -> None:
        """Gather the cases of every DDP rank (nothing to do without a process group)."""
        return None

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """``{metric name: value}`` over the cases so far (empty without cases)."""


class ObjectiveTerm(ABC):
    """One term of the objective; ``weight`` is its factor in the sum.

    ``step`` is the optimizer step being trained (set by :meth:`Objective.set_step` before every
    training batch; a resumed run continues it), for terms with a schedule (e.g. KL annealing).
    """

    step: int = 0
    # ModelOutput.aux keys this term reads: the model is built with the heads that produce them
    requires: frozenset[str] = frozenset()

    def __init__(self, weight: float = 1.0):
        self.weight = float(weight)

    def bind(self, spec: DataSpec) -> None:
        """Called once with the data the run trains on, before training (nothing by default)."""
        return None

    def evaluation(self, spec: DataSpec) -> TermEvaluation | None:
        """The metrics this term adds to every evaluation of the data ``spec`` describes (none by
        default)."""
        return None

    def missing_outputs(self, name: str, missing: set[str], model: str) -> ConfigError:
        """The one-line error when ``model`` cannot give the outputs ``missing`` this term (the
        objective's term ``name``) reads."""
        return ConfigError(
            f"the objective needs model outputs {sorted(missing)} that model={model} cannot give "
            f"(objective.{name} reads them); set objective.{name}.weight=0 or choose a model that "
            "gives them"
        )

    @abstractmethod
    def __call__(self, output: ModelOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The term's value (a scalar tensor) and extra values to log (may be empty)."""


class Objective:
    """``objective(output, batch) -> (total, {name: value, extra key: value})``."""

    def __init__(self, terms: Mapping[str, ObjectiveTerm]):
        self.terms = {name: term for name, term in terms.items() if term.weight != 0}
        if not self.terms:
            raise ConfigError(
                "objective: every term has weight 0, so there is nothing to train; "
                "give a term a weight, e.g. objective.next_item.weight=1.0"
            )

    def __call__(self, output: ModelOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total: torch.Tensor | None = None
        logs: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            value, extra = term(output, batch)
            logs[name] = value.detach()
            logs.update({key: v.detach() if isinstance(v, torch.Tensor) else v for key, v in extra.items()})
            weighted = value if term.weight == 1.0 else term.weight * value
            total = weighted if total is None else total + weighted
        assert total is not None  # at least one term (checked at construction)
        return total, logs

    def set_step(self, step: int) -> None:
        """Tell every term which optimizer step the next batch trains (for scheduled terms)."""
        for term in self.terms.values():
            term.step = int(step)

    def required_outputs(self) -> set[str]:
        """The ``ModelOutput.aux`` keys the terms read (a model builds the heads that give them)."""
        return {key for term in self.terms.values() for key in term.requires}

    def check_outputs(self, given: frozenset[str] | set[str], model: str) -> None:
        """Raise the one-line error of the first term that reads an output ``model`` does not
        give (``given``: the model's ``outputs``)."""
        for name, term in self.terms.items():
            missing = set(term.requires) - set(given)
            if missing:
                raise term.missing_outputs(name, missing, model)

    def evaluations(self, spec: DataSpec) -> list[TermEvaluation]:
        """The metrics the terms add to every evaluation, in the terms' order."""
        return [e for term in self.terms.values() if (e := term.evaluation(spec)) is not None]

    def log_names(self) -> list[str]:
        """The names logged under ``train/`` by the terms (each term's value)."""
        return list(self.terms)
