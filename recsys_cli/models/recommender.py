"""The sequence recommender: item table -> encoder -> scales -> fusion -> user states.

One module for every encoder, fusion and item representation: each is built from config
(``_partial_`` targets, called here with the data spec and sizes known only after preparation),
never chosen by string.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.output import ModelOutput
from recsys_cli.contract.params import Fraction, NonNegative, PositiveInt, Range
from recsys_cli.errors import ConfigError
from recsys_cli.models.context import ContextEmbedding, side_table
from recsys_cli.models.fusion import Fusion
from recsys_cli.models.items import ItemRepresentation
from recsys_cli.models.latent import VariationalLatent
from recsys_cli.models.scales import MultiScalePooling

# auxiliary outputs a model can be asked for (by the objective terms that read them)
OUTPUT_HEADS = ("behaviour_logits", "latent_mu", "latent_logvar")


class SequenceRecommender(nn.Module):
    """Next-item model over left-padded sequences (newest event last).

    ``forward(batch, keep)`` returns a :class:`ModelOutput` with the user state at each of the last
    ``max_len`` positions [B, L, D] and the item table [N + 1, D] they are scored against; the same
    table gives the input vectors. ``keep`` [S] bool removes scales (ablation).

    Switches on top of the sequence (each off by default; :mod:`recsys_cli.models.context`,
    :mod:`recsys_cli.models.latent`):

    - ``context``: features of each past event (hour, weekday, gap, event_type, category) added
      to its vector; ``context_request_time`` adds the request's time features to the state;
    - ``user_embedding``: a learned vector per user added to the state; users unknown to training
      share a learned unknown-user vector, which training learns by replacing the user with it
      at a rate of ``user_dropout``;
    - ``latent``: a variational latent over the fused state (``model/latent=vae``);
    - ``scoring``: ``dot`` (state . item) or ``cosine`` (both normalised, divided by a
      ``temperature``, learned unless ``learn_temperature=false``);
    - ``outputs``: auxiliary outputs the objective reads (``behaviour_logits``: a linear head
      predicting the next event's type from the state; the builder asks for what the terms need).
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
        context: Sequence[str] = (),
        context_request_time: bool = False,
        user_embedding: bool = False,
        user_dropout: Fraction = 0.1,
        scoring: Literal["dot", "cosine"] = "dot",
        temperature: Annotated[float, Range(min=0.01)] = 0.1,
        learn_temperature: bool = True,
        latent: Callable[..., VariationalLatent] | None = None,
        outputs: Sequence[str] = (),
        init_std: NonNegative | None = 0.02,
    ):
        super().__init__()
        self.num_items, self.dim, self.max_len = spec.num_items, dim, spec.max_len
        scales = spec.scales
        self.scale_names = scales.names
        self.items = item(spec=spec, dim=dim)
        context = list(context)
        use_event_types = use_event_types or "event_type" in context
        use_categories = use_categories or "category" in context
        num_types = spec.num_event_types
        if "event_type" in context and not num_types:
            raise ConfigError(
                "model.context has event_type, but the data has no event types (no 'event_type' "
                "column): remove it from model.context or use data with behaviour types"
            )
        # one event type says nothing about an event: no table (it would only add a constant)
        self.type_embedding = side_table(num_types + 1, dim, init_std) if use_event_types and num_types > 1 else None
        if use_categories and not spec.num_categories:
            raise ConfigError(
                "model.use_categories=true, but the data has no item categories (no 'category' "
                "column): set model.use_categories=false or give the events or items a category"
            )
        # item categories as side information: every event's vector also carries its category, so
        # a window's bag holds the window's category mix (0 = unknown category, a zero vector)
        self.category_embedding = (
            side_table(spec.num_categories + 1, dim, init_std) if use_categories else None
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
        # the switches below create no module (and draw no random number) when they are off
        own = [f for f in context if f not in ("event_type", "category")]  # times and data columns
        self.context = ContextEmbedding(spec, dim, own, context_request_time, init_std) if own or context_request_time else None
        self.user_dropout = user_dropout
        self.user_embedding = None
        if user_embedding:  # row 0: the unknown user (learned, not padding)
            self.user_embedding = nn.Embedding(spec.num_users + 1, dim)
            nn.init.normal_(self.user_embedding.weight, std=dim**-0.5)
        if scoring not in ("dot", "cosine"):
            raise ConfigError(f"model.scoring={scoring!r}: use dot or cosine")
        self.scoring = scoring
        if scoring == "cosine":
            log_scale = torch.tensor(-math.log(temperature))
            self.log_scale = nn.Parameter(log_scale) if learn_temperature else None
            if not learn_temperature:
                self.register_buffer("fixed_log_scale", log_scale)
        self.latent = latent(dim=dim) if callable(latent) else None  # model/latent=none: an empty node
        unknown = sorted(set(outputs) - set(OUTPUT_HEADS))
        if unknown:
            raise ConfigError(f"the objective needs model outputs {unknown} that {type(self).__name__} cannot give")
        if ("latent_mu" in outputs or "latent_logvar" in outputs) and self.latent is None:
            raise ConfigError(
                "objective.kl needs a variational user latent: add model/latent=vae (or set the kl "
                "term's weight to 0)"
            )
        self.behaviour_head = None
        if "behaviour_logits" in outputs:
            if num_types < 2:
                raise ConfigError(
                    f"objective.behaviour: the data has {num_types} event type(s), so there is no next "
                    "behaviour to predict; set objective.behaviour.weight=0 or use data with event types"
                )
            self.behaviour_head = nn.Linear(dim, num_types)

    def embed(self, batch: Batch, table: torch.Tensor) -> torch.Tensor:
        """[B, T] event fields -> [B, T, D] input vectors, from the item table [N + 1, D].

        Item vectors are shared with the output layer; as inputs they are scaled by ``sqrt(D)``,
        as SASRec, BERT4Rec, HSTU and the Transformer do (with the item table at std 0.02, an
        input starts at std 0.16 per coordinate, the positions at 0.02).
        """
        x = F.embedding(batch["items"], table, padding_idx=0) * self.dim**0.5
        if self.type_embedding is not None:
            x = x + self.type_embedding(batch["event_types"].clamp(max=self.type_embedding.num_embeddings - 1))
        if self.category_embedding is not None:
            limit = self.category_embedding.num_embeddings - 1
            x = x + self.category_embedding(batch["categories"].clamp(max=limit))
        if self.context is not None:
            x = x + self.context.events(batch)
        return x

    def _user_vectors(self, batch: Batch) -> torch.Tensor:
        """[B, D]: each case's user vector (row 0, the unknown user, for users unknown to training
        and, in training, for a ``user_dropout`` share of the cases)."""
        users = batch["users"]
        if self.training and self.user_dropout > 0:
            users = users * (torch.rand(users.shape, device=users.device) >= self.user_dropout)
        return self.user_embedding(users)

    def _scored(self, z: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States and item table such that ``state . item`` is the configured score."""
        if self.scoring == "dot":
            return z, table
        log_scale = self.log_scale if self.log_scale is not None else self.fixed_log_scale
        scale = log_scale.clamp(max=math.log(100.0)).exp()  # a temperature of at least 0.01
        return F.normalize(z, dim=-1) * scale, F.normalize(table, dim=-1)

    def forward(self, batch: Batch, keep: torch.Tensor | None = None, last_only: bool = False) -> ModelOutput:
        """User states [B, L, D] for the last L positions of ``batch`` (fields [B, H + L]; L is
        ``max_len``, or fewer when the batch's leading padding was trimmed). ``last_only``: the
        newest position's state alone, [B, 1, D] (evaluation): the encoder still reads every
        position, the scales and the fusion only work for the newest."""
        L = batch["targets"].shape[1]
        A = 1 if last_only else L  # the positions whose states are returned (the last A)
        table = self.items(batch)  # [N + 1, D]
        x = self.embed(batch, table)
        valid = batch["items"] > 0
        inputs, mask = self.embedding_dropout(x[:, -L:]), valid[:, -L:]
        h = self.encoder(inputs, mask)  # [B, L, D]
        if self.pooling is None:
            z, weights = self.fusion(h[:, L - A :], h.new_zeros(h.shape[0], 0, A, self.dim), keep)
        else:
            states = h
            if self.scale_encoders is not None:  # [B, S, L, D]: each scale's own encoder
                states = torch.stack([enc(inputs, mask) for enc in self.scale_encoders], dim=1)
            v = self.pooling(x, states, batch, anchors=A)  # [B, S, A, D]
            z, weights = self.fusion(h[:, L - A :], v, keep)
        aux: dict[str, torch.Tensor] = {}
        if self.user_embedding is not None:
            z = z + self._user_vectors(batch).unsqueeze(1)
        if self.context is not None:
            z = z + self.context.request(batch, A)
        if self.latent is not None:
            z, aux["latent_mu"], aux["latent_logvar"] = self.latent(z)
            aux["latent_mask"] = batch["targets"][:, L - A :] > 0
        if self.behaviour_head is not None:
            aux["behaviour_logits"] = self.behaviour_head(z)
        z, table = self._scored(z, table)
        return ModelOutput(states=z, item_table=table, aux=aux, scale_weights=weights if weights.numel() else None)

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
