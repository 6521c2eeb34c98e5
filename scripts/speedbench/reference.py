"""The reference SASRec the product is timed against: the SASRec+ recipe as its authors wrote it.

Klenitskiy & Vasilev (RecSys 2023, github.com/antklen/sasrec-bert4rec-recsys23, ``SASRec`` in
``src/models.py``, itself pmixer's SASRec.pytorch), the best public SASRec on MovieLens-1M
(NDCG@10 0.1821): every embedding and linear layer initialised N(0, 0.02), biases zero; item
vectors times sqrt(D) plus learned absolute positions, dropout; per block a LayerNorm'd query
attending to the unnormalised sequence (``x = LN(x) + MHA(LN(x), x, x)``), then ``x = LN(x)`` and
a residual point-wise feed-forward; a final LayerNorm (eps 1e-8 throughout); logits against the
item table at every position, full cross-entropy; Adam, lr 1e-3. One change: padded keys are
masked (SASRec+ leaves them visible; RePlay masks them), so a history's states do not depend on its
padding, as the product's do not.

``init="unit_norm"`` starts the item table at unit-norm rows (std D^-0.5) and the positions at
``nn.Embedding``'s N(0, 1), everything else as above: the initialisation the product and the
harness used before ``model.init_std`` (docs/results/ml1m-plateau.md isolates it on both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.02
INITS = ("sasrec+", "unit_norm")


class SASRecBlock(nn.Module):
    """One SASRec block: LayerNorm'd queries over the unnormalised sequence, then a feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim, eps=1e-8)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim), nn.Dropout(dropout), nn.ReLU(), nn.Linear(dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, blocked: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        q = self.attention_norm(x)
        attended, _ = self.attention(q, x, x, attn_mask=blocked, need_weights=False)
        x = self.ffn_norm(q + attended)
        return (x + self.ffn(x)) * valid


class ReferenceSASRec(nn.Module):
    """SASRec with full cross-entropy at every position (the SASRec+ recipe, module docstring)."""

    def __init__(
        self, num_items: int, max_len: int, dim: int, blocks: int, heads: int, dropout: float, init: str = "sasrec+"
    ):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init={init!r}: expected one of {', '.join(INITS)}")
        self.num_items, self.max_len, self.dim, self.heads = num_items, max_len, dim, heads
        self.item = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.position = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(dim, heads, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(dim, eps=1e-8)
        self.register_buffer("future", torch.ones(max_len, max_len, dtype=torch.bool).triu(1), persistent=False)
        self.apply(self._init)
        if init == "unit_norm":
            nn.init.normal_(self.item.weight, std=dim**-0.5)
            nn.init.normal_(self.position.weight, std=1.0)
            with torch.no_grad():
                self.item.weight[0].zero_()

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.MultiheadAttention):  # its projections are not nn.Linear modules
            nn.init.normal_(module.in_proj_weight, std=INIT_STD)
            nn.init.zeros_(module.in_proj_bias)
            nn.init.normal_(module.out_proj.weight, std=INIT_STD)
            nn.init.zeros_(module.out_proj.bias)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """[B, L] item ids (left-padded with 0, newest last) -> [B, L, D] states."""
        B, L = items.shape
        valid = (items > 0).unsqueeze(-1)
        x = self.item(items) * self.dim**0.5 + self.position.weight[-L:]
        x = self.dropout(x) * valid
        # True = may not attend: future positions and padded keys; a padded query attends to
        # itself only (so its softmax is defined; its state is never scored)
        eye = torch.eye(L, dtype=torch.bool, device=items.device)
        blocked = (self.future[:L, :L] | ~valid.squeeze(-1)[:, None, :]) & ~eye
        blocked = blocked.repeat_interleave(self.heads, dim=0)  # [B * heads, L, L]
        for block in self.blocks:
            x = block(x, blocked, valid)
        return self.norm(x)

    def loss(self, items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the supervised positions (``targets > 0``); logits at all B x L."""
        logits = self.encode(items) @ self.item.weight[1:].T  # [B, L, D] @ [D, N] -> [B, L, N]
        return F.cross_entropy(logits.reshape(-1, self.num_items), (targets - 1).reshape(-1), ignore_index=-1)

    def scores(self, items: torch.Tensor) -> torch.Tensor:
        """[B, N + 1] scores after the newest position; column 0 (padding) is -inf."""
        scores = self.encode(items)[:, -1] @ self.item.weight.T
        scores[:, 0] = float("-inf")
        return scores


DESCRIPTION = (
    "SASRec+ (Klenitskiy & Vasilev 2023): N(0, 0.02) init, items x sqrt(D) + absolute positions, SASRec blocks "
    "(LayerNorm'd queries, residual feed-forward), final LayerNorm, full CE at all B x L positions, tied item "
    "embedding, Adam lr 1e-3; padded keys masked"
)
