"""What every model returns: one typed value read by name (no attributes set during ``forward``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ModelOutput:
    """The output of ``model(batch, keep=None, last_only=False)``.

    ``last_only=True`` (what evaluation asks): only the newest position's state is needed, and a
    model may return ``states`` [B, 1, D].

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

    def last_score_chunks(self, max_elements: int):
        """Yield ``(rows, scores)``: the :meth:`last_scores` of consecutive row slices of the
        batch, each ``[b, N + 1]`` with ``b * (N + 1) <= max_elements`` (at least one row), so
        that ranking a large catalogue never holds the whole ``[B, N + 1]`` matrix. Each chunk is
        a new tensor, the caller's to modify (seen items are masked in place)."""
        total, width = self._score_shape()
        step = max(1, max_elements // max(width, 1))
        for start in range(0, total, step):
            rows = slice(start, min(start + step, total))
            scores = self._scores_of(rows)
            yield rows, scores.clone() if self.scores is not None else scores

    def _score_shape(self) -> tuple[int, int]:
        if self.scores is not None:
            return tuple(self.scores.shape)
        if self.states is None or self.item_table is None:
            raise ValueError("a ModelOutput needs scores, or states and an item table")
        return self.states.shape[0], self.item_table.shape[0]

    def _scores_of(self, rows: slice) -> Tensor:
        """[b, N + 1] scores of the batch rows ``rows`` after the newest position (column 0 -inf)."""
        if self.scores is not None:
            return self.scores[rows]
        scores = self.states[rows, -1] @ self.item_table.T  # [b, D] @ [D, N + 1] -> [b, N + 1]
        scores[:, 0] = float("-inf")
        return scores

    def last_scores(self) -> Tensor:
        """[B, N + 1] scores of every item after the newest position; column 0 (padding) is -inf."""
        if self.scores is not None:
            return self.scores
        self._score_shape()  # states and an item table, or a one-line error
        return self._scores_of(slice(None))
