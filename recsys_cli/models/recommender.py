"""The sequence recommender: item table -> encoder -> scales -> fusion -> parts -> user states.

One module for every encoder, fusion, item representation and scoring: each is built from config
(``_partial_`` targets, called here with the data spec and sizes known only after preparation),
never chosen by string. Everything else is a part (:mod:`recsys_cli.models.parts`) listed in the
config and applied in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.encoder_input import EncoderInput
from recsys_cli.contract.output import ModelOutput
from recsys_cli.contract.params import Fraction, PositiveInt
from recsys_cli.errors import ConfigError
from recsys_cli.models.fusion import Fusion
from recsys_cli.models.items import ItemRepresentation
from recsys_cli.models.parts.base import PartFactory, build_parts
from recsys_cli.models.scales import MultiScalePooling
from recsys_cli.models.scoring import DotScoring

NO_PARTS: Mapping[str, PartFactory] = MappingProxyType({})
# the [MASK] input's initial std (task=cloze): BERT's for every token, the item table's default
MASK_INIT_STD = 0.02


class SequenceRecommender(nn.Module):
    """Next-item model over left-padded sequences (newest event last).

    ``forward(batch, keep)`` returns a :class:`ModelOutput` with the user state at each of the last
    ``max_len`` positions [B, L, D] and the item table [N + 1, D] they are scored against; the same
    table gives the input vectors. ``keep`` [S] bool removes scales (ablation).

    The parts (each a config node, name -> ``_partial_`` target; :mod:`recsys_cli.models.parts`):

    - ``inputs``: side features added to every event's input vector (event type, category);
    - ``state``: applied in order to the fused state (context, user vector, variational latent);
    - ``heads``: ``ModelOutput.aux`` key -> the part that gives it, built only for the keys in
      ``outputs`` (what the objective's terms read; the builder asks) that no state part gives.

    ``scoring`` makes the scored pair (dot or cosine); :attr:`outputs` is every aux key this
    model gives.
    """

    requires_training = True

    def __init__(
        self,
        spec: DataSpec,
        dim: PositiveInt,
        encoder: Callable[[], nn.Module],
        fusion: Callable[..., Fusion],
        item: Callable[..., ItemRepresentation],
        scoring: Callable[[], nn.Module] = DotScoring,
        inputs: Mapping[str, PartFactory] = NO_PARTS,
        state: Mapping[str, PartFactory] = NO_PARTS,
        heads: Mapping[str, PartFactory] = NO_PARTS,
        outputs: Sequence[str] = (),
        share_encoder: bool = True,
        dropout: Fraction = 0.2,
    ):
        super().__init__()
        self.num_items, self.dim, self.max_len = spec.num_items, dim, spec.max_len
        scales = spec.scales
        self.scale_names = scales.names
        self.items = item(spec=spec, dim=dim)
        # built in this order (inputs before the encoder, the state parts after the fusion): each
        # module's random initial weights are then the draws every earlier version made
        self.inputs = build_parts(inputs, spec, dim)
        self.encoder = encoder()
        self.has_time = spec.has_time
        needs_time = getattr(self.encoder, "time_setting", None)
        if needs_time is not None and not spec.has_time:
            raise ConfigError(
                f"{needs_time}: the data has no timestamps (its times are positions); use a dataset "
                "with a time column, or leave the setting off"
            )
        S = len(scales)
        # share_encoder=False: every scale reads the sequence with an encoder of its own
        self.scale_encoders = nn.ModuleList(encoder() for _ in range(S)) if S and not share_encoder else None
        self.pooling = (
            MultiScalePooling(
                list(scales.windows), dim, pooling=scales.pooling, statistics=scales.statistics,
                num_stats=len(spec.stat_names),
            )
            if S
            else None
        )  # fmt: skip
        self.fusion = fusion(dim=dim, num_scales=S)
        self.embedding_dropout = nn.Dropout(dropout)
        self.state = build_parts(state, spec, dim)
        given = {key for part in self.state.values() for key in part.provides}
        asked = {key: factory for key, factory in heads.items() if key in outputs and key not in given}
        self.heads = build_parts(asked, spec, dim)
        self.outputs = frozenset(given | set(self.heads))
        self.scoring = scoring()
        # task=cloze: the learned [MASK] input (item id spec.mask_item), outside the item table so
        # never a candidate; built last, and only then (other tasks draw nothing for it)
        self.mask_item = spec.mask_item
        self.mask_vector = nn.Parameter(torch.randn(dim) * MASK_INIT_STD) if spec.mask_item else None

    def embed(self, batch: Batch, table: torch.Tensor) -> torch.Tensor:
        """[B, T] event fields -> [B, T, D] input vectors, from the item table [N + 1, D].

        Item vectors are shared with the output layer; as inputs they are scaled by ``sqrt(D)``,
        as SASRec, BERT4Rec, HSTU and the Transformer do (with the item table at std 0.02, an
        input starts at std 0.16 per coordinate, the positions at 0.02). The parts then add their
        vectors, the input parts first.
        """
        items = batch["items"]
        if self.mask_vector is None:
            x = F.embedding(items, table, padding_idx=0) * self.dim**0.5
        else:  # [MASK] positions read the mask vector, as an item would be (scaled alike)
            hidden = (items == self.mask_item).unsqueeze(-1)
            x = F.embedding(items.masked_fill(hidden.squeeze(-1), 0), table, padding_idx=0)
            x = torch.where(hidden, self.mask_vector.to(x.dtype), x) * self.dim**0.5
        for part in (*self.inputs.values(), *self.state.values()):
            extra = part.embed(batch)  # [B, T, D] or None
            if extra is not None:
                x = x + extra
        return x

    def forward(self, batch: Batch, keep: torch.Tensor | None = None, last_only: bool = False) -> ModelOutput:
        """User states [B, L, D] for the last L positions of ``batch`` (fields [B, H + L]; L is
        ``max_len``, or fewer when the batch's leading padding was trimmed). ``last_only``: the
        newest position's state alone, [B, 1, D] (evaluation, recommendation): the encoder still
        reads every position, the scales and the fusion only work for the newest. The batch
        needs no targets (a query has none): L follows from the memory's width."""
        L = min(self.max_len, batch["items"].shape[1])
        A = 1 if last_only else L  # the positions whose states are returned (the last A)
        table = self.items(batch)  # [N + 1, D]
        x = self.embed(batch, table)
        valid = batch["items"] > 0
        times = batch["times"][:, -L:] if self.has_time else None  # positions are no times
        inputs = EncoderInput(self.embedding_dropout(x[:, -L:]), valid[:, -L:], times)
        h = self.encoder(inputs)  # [B, L, D]
        if self.pooling is None:
            z, weights = self.fusion(h[:, L - A :], h.new_zeros(h.shape[0], 0, A, self.dim), keep)
        else:
            states = h
            if self.scale_encoders is not None:  # [B, S, L, D]: each scale's own encoder
                states = torch.stack([enc(inputs) for enc in self.scale_encoders], dim=1)
            v = self.pooling(x, states, batch, anchors=A)  # [B, S, A, D]
            z, weights = self.fusion(h[:, L - A :], v, keep)
        aux: dict[str, torch.Tensor] = {}
        for part in self.state.values():
            z = part(z, batch, aux)  # [B, A, D]
        for key, head in self.heads.items():
            aux[key] = head(z)
        z, table = self.scoring(z, table)
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
