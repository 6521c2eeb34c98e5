"""The sequence recommender: embeddings -> encoder -> scales -> fusion -> scores over all items.

One module for every encoder and fusion: both are built from config (``_partial_`` targets, called
here with the sizes only known after data preparation), never chosen by string.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from recsys_cli.data.windows import parse_scales
from recsys_cli.errors import ConfigError
from recsys_cli.models.fusion import Fusion
from recsys_cli.models.scales import MultiScalePooling


class SequenceRecommender(nn.Module):
    """Next-item model over left-padded sequences (newest event last).

    ``forward(batch)`` returns the user state at each of the last ``max_len`` positions,
    [B, L, D]; ``score(batch)`` the scores of every item for the newest position, [B, N + 1]
    (column 0, the padding item, is -inf). Item embeddings are shared with the output layer.
    """

    requires_training = True

    def __init__(
        self,
        num_items: int,
        dim: int,
        max_len: int,
        encoder: Callable[[], nn.Module],
        fusion: Callable[..., Fusion],
        scales: Mapping,
        share_encoder: bool = True,
        use_event_types: bool = True,
        num_event_types: int = 0,
        use_categories: bool = False,
        num_categories: int = 0,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.num_items, self.dim, self.max_len = num_items, dim, max_len
        self.scales = parse_scales(scales.get("windows") or [], scales["max_events"])
        self.scale_names = [s.name for s in self.scales]
        self.item_embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.type_embedding = (
            nn.Embedding(num_event_types + 1, dim, padding_idx=0) if use_event_types and num_event_types else None
        )
        if use_categories and not num_categories:
            raise ConfigError(
                "model.use_categories=true, but the data has no item categories (no 'category' "
                "column): set model.use_categories=false or give the events or items a category"
            )
        # item categories as side information: every event's vector also carries its category, so
        # a window's bag holds the window's category mix (0 = unknown category, a zero vector)
        self.category_embedding = (
            nn.Embedding(num_categories + 1, dim, padding_idx=0) if use_categories else None
        )
        self.encoder = encoder()
        S = len(self.scales)
        # share_encoder=False: every scale reads the sequence with an encoder of its own
        self.scale_encoders = nn.ModuleList(encoder() for _ in range(S)) if S and not share_encoder else None
        self.pooling = (
            MultiScalePooling(
                self.scales,
                dim,
                pooling=scales["pooling"],
                statistics=scales["statistics"],
                num_event_types=num_event_types,
            )
            if S
            else None
        )
        self.fusion = fusion(dim=dim, num_scales=S)
        self.embedding_dropout = nn.Dropout(dropout)
        self.scale_weights = torch.zeros(S)

    def embed(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """[B, T] event fields -> [B, T, D] input vectors.

        Item embeddings are shared with the output layer (per-coordinate std ``D ** -0.5``, unit
        norm); as inputs they are scaled by ``sqrt(D)`` (as in SASRec and the Transformer) so the
        encoder sees unit-variance inputs. Without it the encoder's output is dominated by its
        biases at the start and training sits for several epochs on a popularity-only plateau.
        """
        x = self.item_embedding(batch["items"]) * self.dim**0.5
        if self.type_embedding is not None:
            x = x + self.type_embedding(batch["event_types"].clamp(max=self.type_embedding.num_embeddings - 1))
        if self.category_embedding is not None:
            limit = self.category_embedding.num_embeddings - 1
            x = x + self.category_embedding(batch["categories"].clamp(max=limit))
        return x

    def forward(self, batch: Mapping[str, torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
        """User states [B, L, D] for the last L positions of ``batch`` (fields [B, H + L])."""
        L = self.max_len
        x = self.embed(batch)
        valid = batch["items"] > 0
        inputs, mask = self.embedding_dropout(x[:, -L:]), valid[:, -L:]
        h = self.encoder(inputs, mask)  # [B, L, D]
        if self.pooling is None:
            z, weights = self.fusion(h, h.new_zeros(h.shape[0], 0, L, self.dim), keep)
        else:
            states = h
            if self.scale_encoders is not None:  # [B, S, L, D]: each scale's own encoder
                states = torch.stack([enc(inputs, mask) for enc in self.scale_encoders], dim=1)
            v = self.pooling(x, states, batch)  # [B, S, L, D]
            z, weights = self.fusion(h, v, keep)
        self.scale_weights = weights
        return z

    def output_embeddings(self) -> torch.Tensor:
        """[N + 1, D] item vectors scored against user states (row 0 is padding)."""
        return self.item_embedding.weight

    def score(self, batch: Mapping[str, torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
        z = self.forward(batch, keep)[:, -1]  # [B, D]
        scores = z @ self.output_embeddings().T  # [B, D] @ [D, N+1] -> [B, N+1]
        scores[:, 0] = float("-inf")
        return scores

    def ablation_masks(self) -> Sequence[tuple[str, torch.Tensor]]:
        """(name, keep mask) for every scale removed in turn."""
        S = len(self.scales)
        out = []
        for s, name in enumerate(self.scale_names):
            keep = torch.ones(S, dtype=torch.bool)
            keep[s] = False
            out.append((name, keep))
        return out
