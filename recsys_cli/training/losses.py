"""Next-item objective terms: the user state at every supervised position scores the next item.

Each term gathers the M supervised positions of the batch (``targets > 0``) and computes its loss
from the states ``z`` [M, D], their targets [M] (item ids 1..N) and the item table [N + 1, D]
(row 0 = padding, never a candidate). Chosen by ``objective/next_item=full_ce|sampled_softmax|bce``.

Items held out of training (``data.cold_items``) are not candidates either: in the cold-start
protocol they do not exist yet when the model trains, so no term pushes their scores down (as
negatives they would teach a text model to avoid the text of exactly the items it is tested on).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.output import ModelOutput
from recsys_cli.contract.params import NonNegative, PositiveInt
from recsys_cli.errors import ConfigError
from recsys_cli.training.objective import ObjectiveTerm


class NextItemTerm(ObjectiveTerm):
    """Base of the next-item losses: subclasses implement :meth:`loss`."""

    excluded: torch.Tensor | None = None  # [N + 1] bool: items that are never candidates

    def bind(self, spec: DataSpec) -> None:
        held = spec.held_out_items
        if held is not None and len(held):
            self.excluded = torch.zeros(spec.num_items + 1, dtype=torch.bool)
            self.excluded[torch.as_tensor(held, dtype=torch.long)] = True

    def _excluded(self, device: torch.device) -> torch.Tensor | None:
        if self.excluded is not None and self.excluded.device != device:
            self.excluded = self.excluded.to(device)
        return self.excluded

    def __call__(self, output: ModelOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if output.states is None or output.item_table is None:
            raise ConfigError(
                "objective.next_item reads user states and an item table, which this model does not "
                "give (it scores directly): set objective.next_item.weight=0"
            )
        targets = batch["targets"]  # [B, L]
        sel = targets > 0
        return self.loss(output.states[sel], targets[sel], output.item_table), {}

    def loss(self, z: torch.Tensor, targets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """z [M, D], targets [M], items [N + 1, D] -> the mean loss over the M positions."""
        raise NotImplementedError


class FullSoftmaxCE(NextItemTerm):
    """Cross-entropy over the whole catalogue (SASRec+ / "full CE"): the default.

    Logits are built in chunks of ``chunk_size`` positions so memory stays at chunk x N.
    """

    def __init__(self, weight: NonNegative = 1.0, chunk_size: PositiveInt = 4096):
        super().__init__(weight)
        self.chunk_size = chunk_size

    def loss(self, z: torch.Tensor, targets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        candidates = items[1:]  # [N, D]
        excluded = self._excluded(z.device)
        total = z.new_zeros(())
        for i in range(0, z.shape[0], self.chunk_size):
            logits = z[i : i + self.chunk_size] @ candidates.T  # [m, D] @ [D, N] -> [m, N]
            if excluded is not None:
                logits = logits.masked_fill(excluded[1:], float("-inf"))
            total = total + F.cross_entropy(logits.float(), targets[i : i + self.chunk_size] - 1, reduction="sum")
        return total / max(z.shape[0], 1)


class SampledSoftmax(NextItemTerm):
    """Softmax over the target and ``num_negatives`` uniformly sampled items shared by the batch.

    Negatives equal to a row's target are masked out (no accidental hits). Uniform sampling needs
    no logQ correction.
    """

    def __init__(
        self, weight: NonNegative = 1.0, num_negatives: PositiveInt = 256, seed: int = 0
    ):
        super().__init__(weight)
        if num_negatives < 1:
            raise ConfigError(f"objective.next_item.num_negatives={num_negatives}: use at least 1")
        self.num_negatives = num_negatives
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self, z: torch.Tensor, targets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        n = items.shape[0] - 1
        neg = torch.randint(1, n + 1, (self.num_negatives,), generator=self.generator).to(z.device)
        pos_logit = (z * items[targets]).sum(-1, keepdim=True)  # [M, 1]
        neg_logit = z @ items[neg].T  # [M, K]
        neg_logit = neg_logit.masked_fill(neg[None, :] == targets[:, None], float("-inf"))
        excluded = self._excluded(z.device)
        if excluded is not None:
            neg_logit = neg_logit.masked_fill(excluded[neg][None, :], float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], dim=1).float()
        return F.cross_entropy(logits, torch.zeros_like(targets))


class BCEOneNegative(NextItemTerm):
    """Binary cross-entropy with one uniformly sampled negative per position (original SASRec)."""

    def __init__(self, weight: NonNegative = 1.0, seed: int = 0):
        super().__init__(weight)
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self, z: torch.Tensor, targets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        n = items.shape[0] - 1
        neg = torch.randint(1, n + 1, targets.shape, generator=self.generator).to(z.device)
        pos = (z * items[targets]).sum(-1).float()
        negl = (z * items[neg]).sum(-1).float()
        valid = neg != targets
        excluded = self._excluded(z.device)
        if excluded is not None:
            valid = valid & ~excluded[neg]
        valid = valid.float()
        loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none")
        loss = loss + valid * F.binary_cross_entropy_with_logits(negl, torch.zeros_like(negl), reduction="none")
        return loss.mean()
