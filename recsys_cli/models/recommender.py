"""The sequence recommender: item table -> encoder -> scales -> fusion -> user states.

One module for every encoder, fusion and item representation: each is built from config
(``_partial_`` targets, called here with the data spec and sizes known only after preparation),
never chosen by string.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.output import ModelOutput
from recsys_cli.contract.params import Fraction, PositiveInt
from recsys_cli.errors import ConfigError
from recsys_cli.models.fusion import Fusion
from recsys_cli.models.items import ItemRepresentation
from recsys_cli.models.scales import MultiScalePooling


class SequenceRecommender(nn.Module):
    """Next-item model over left-padded sequences (newest event last).

    ``forward(batch, keep)`` returns a :class:`ModelOutput` with the user state at each of the last
    ``max_len`` positions [B, L, D] and the item table [N + 1, D] they are scored against; the same
    table gives the input vectors. ``keep`` [S] bool removes scales (ablation).
    """

    requires_training = True

    def __init__(
        self,
        spec: DataSpec,
        dim: PositiveInt,
        encoder: Callable[[], nn.Module],
        fusion: Callable[..., Fusion],
        item: Callable[..., ItemRepresentation],
        share_encoder: bool = True,
        use_event_types: bool = True,
        use_categories: bool = False,
        dropout: Fraction = 0.2,
    ):
        super().__init__()
        self.num_items, self.dim, self.max_len = spec.num_items, dim, spec.max_len
        scales = spec.scales
        self.scale_names = scales.names
        self.items = item(spec=spec, dim=dim)
        num_types = spec.num_event_types
        self.type_embedding = nn.Embedding(num_types + 1, dim, padding_idx=0) if use_event_types and num_types else None
        if use_categories and not spec.num_categories:
            raise ConfigError(
                "model.use_categories=true, but the data has no item categories (no 'category' "
                "column): set model.use_categories=false or give the events or items a category"
            )
        # item categories as side information: every event's vector also carries its category, so
        # a window's bag holds the window's category mix (0 = unknown category, a zero vector)
        self.category_embedding = (
            nn.Embedding(spec.num_categories + 1, dim, padding_idx=0) if use_categories else None
        )
        self.encoder = encoder()
        S = len(scales)
        # share_encoder=False: every scale reads the sequence with an encoder of its own
        self.scale_encoders = nn.ModuleList(encoder() for _ in range(S)) if S and not share_encoder else None
        self.pooling = (
            MultiScalePooling(
                list(scales.windows),
                dim,
                pooling=scales.pooling,
                statistics=scales.statistics,
                num_stats=len(spec.stat_names),
            )
            if S
            else None
        )
        self.fusion = fusion(dim=dim, num_scales=S)
        self.embedding_dropout = nn.Dropout(dropout)

    def embed(self, batch: Batch, table: torch.Tensor) -> torch.Tensor:
        """[B, T] event fields -> [B, T, D] input vectors, from the item table [N + 1, D].

        Item vectors are shared with the output layer (about unit norm); as inputs they are scaled
        by ``sqrt(D)`` (as in SASRec and the Transformer) so the encoder sees unit-variance inputs.
        Without it the encoder's output is dominated by its biases at the start and training sits
        for several epochs on a popularity-only plateau.
        """
        x = F.embedding(batch["items"], table, padding_idx=0) * self.dim**0.5
        if self.type_embedding is not None:
            x = x + self.type_embedding(batch["event_types"].clamp(max=self.type_embedding.num_embeddings - 1))
        if self.category_embedding is not None:
            limit = self.category_embedding.num_embeddings - 1
            x = x + self.category_embedding(batch["categories"].clamp(max=limit))
        return x

    def forward(self, batch: Batch, keep: torch.Tensor | None = None) -> ModelOutput:
        """User states [B, L, D] for the last L positions of ``batch`` (fields [B, H + L])."""
        L = self.max_len
        table = self.items(batch)  # [N + 1, D]
        x = self.embed(batch, table)
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
        return ModelOutput(states=z, item_table=table, scale_weights=weights if weights.numel() else None)

    def refresh_items(self) -> None:
        """Before a training epoch or an evaluation: bring the item table up to date."""
        self.items.refresh()

    def parameter_groups(self) -> list[dict]:
        """Optimizer parameter groups: the item representation's own (e.g. a language model with
        its learning rate), then every other parameter with the optimizer's settings."""
        own = self.items.parameter_groups()
        taken = {id(p) for group in own for p in group["params"]}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in taken]
        return [{"params": rest}, *own]
