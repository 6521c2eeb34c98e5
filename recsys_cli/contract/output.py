"""What every model returns: one typed value read by name (no attributes set during ``forward``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ModelOutput:
    """The output of ``model(batch, keep=None)``.

    - ``states`` [B, L, D]: the user state at each encoder position (predicting the next item);
    - ``item_table`` [N + 1, D]: the item vectors scores are computed against (row 0 = padding);
    - ``scores`` [B, N + 1]: set by models that score directly (count baselines) instead of
      returning states and an item table;
    - ``aux``: named auxiliary outputs for objective terms (e.g. ``kl``, ``behaviour_logits``);
    - ``scale_weights`` [S]: the weight the fusion gave each scale in this batch (detached), or
      None for models without scales.
    """

    states: Tensor | None = None
    item_table: Tensor | None = None
    scores: Tensor | None = None
    aux: dict[str, Tensor] = field(default_factory=dict)
    scale_weights: Tensor | None = None

    def last_scores(self) -> Tensor:
        """[B, N + 1] scores of every item after the newest position; column 0 (padding) is -inf."""
        if self.scores is not None:
            return self.scores
        if self.states is None or self.item_table is None:
            raise ValueError("a ModelOutput needs scores, or states and an item table")
        scores = self.states[:, -1] @ self.item_table.T  # [B, D] @ [D, N + 1] -> [B, N + 1]
        scores[:, 0] = float("-inf")
        return scores
