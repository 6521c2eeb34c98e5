"""The reference SASRec the product is timed against."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ReferenceSASRec(nn.Module):
    """SASRec as usually written: item + learned absolute position embeddings, post-LN Transformer
    blocks with a causal mask, full cross-entropy over the catalogue at every position, the item
    embedding shared with the output layer."""

    def __init__(
        self, num_items: int, max_len: int, dim: int, blocks: int, heads: int, dropout: float
    ):
        super().__init__()
        self.num_items, self.max_len, self.dim, self.heads = num_items, max_len, dim, heads
        self.item = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.item.weight, std=dim**-0.5)  # unit-norm items: sane initial logits
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.position = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                dim_feedforward=dim,
                dropout=dropout,
                activation="relu",
                batch_first=True,
                norm_first=False,
            )
            for _ in range(blocks)
        )
        self.register_buffer(
            "future", torch.ones(max_len, max_len, dtype=torch.bool).triu(1), persistent=False
        )

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """[B, L] item ids (left-padded with 0) -> [B, L, D] states."""
        B, L = items.shape
        valid = items > 0
        x = self.item(items) * self.dim**0.5 + self.position.weight[:L]
        x = self.dropout(x) * valid.unsqueeze(-1)
        # True = may not attend: future positions and padded keys; a padded query attends to
        # itself only (so its softmax is defined; its state is never scored)
        eye = torch.eye(L, dtype=torch.bool, device=items.device)
        blocked = (self.future[:L, :L] | ~valid[:, None, :]) & ~eye
        mask = blocked.repeat_interleave(self.heads, dim=0)  # [B * heads, L, L]
        for block in self.blocks:
            x = block(x, src_mask=mask)
        return x

    def loss(self, items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the supervised positions (``targets > 0``); logits at all B x L."""
        logits = self.encode(items) @ self.item.weight[1:].T  # [B, L, N]
        return F.cross_entropy(
            logits.reshape(-1, self.num_items), (targets - 1).reshape(-1), ignore_index=-1
        )

    def scores(self, items: torch.Tensor) -> torch.Tensor:
        """[B, N + 1] scores after the newest position; column 0 (padding) is -inf."""
        scores = self.encode(items)[:, -1] @ self.item.weight.T
        scores[:, 0] = float("-inf")
        return scores


DESCRIPTION = (
    "SASRec: absolute positions, post-LN nn.TransformerEncoderLayer x layers, 1 head, FFN width dim, ReLU, "
    "dropout 0.2, full CE at all B x L positions, tied item embedding, Adam lr 1e-3"
)
