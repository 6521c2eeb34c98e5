"""Item tables from what a pretrained language model reads in the items' texts.

``model/item=text``: the table is a projection of the items' text vectors only, so a model scores
items it never saw in training (cold items) and transfers to another catalogue.
``model/item=id_text``: an id embedding and the projected text vector, fused by
``model/item/fusion=add|concat|gate`` (:mod:`recsys_cli.models.item_fusion`).

The text vectors come from :class:`~recsys_cli.models.text_encoder.ItemTextEncoder`. By default
the language model is frozen and its vectors are cached (encoded once per model, template and
catalogue). With ``item_text.finetune.top_layers=K`` (the top K transformer layers train) or
``item_text.finetune.lora`` (LoRA adapters through ``peft``) the language model is part of the
model, and the table must follow its weights. Encoding the whole catalogue at every step is too
slow on a CPU (150 items/s for MiniLM on 2 cores), so the table is kept consistent this way:

- at the start of every training epoch and of every evaluation, every item is encoded with the
  current weights (``refresh``): evaluation always scores the whole catalogue with the weights
  being evaluated;
- at a training step, the batch's items (inputs and targets; at most
  ``finetune.max_items_per_step`` of them, a seeded sample) are encoded again with gradients and
  replace their rows, so the language model learns from them; the other rows are the epoch's
  table (at most one epoch old, without gradients).

Text vectors are standardised with the catalogue's mean and spread at construction, and the
projections start at the id embedding's scale (unit-norm rows), so inputs scaled by ``sqrt(D)``
and scores behave as with ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from recsys_cli.contract.batch import Batch
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.params import Fraction, PositiveInt
from recsys_cli.errors import ConfigError
from recsys_cli.models.item_fusion import AddIdText, IdTextFusion, scaled_linear
from recsys_cli.models.items import IdEmbedding, ItemRepresentation
from recsys_cli.models.text_encoder import ItemTextEncoder, pool

log = logging.getLogger(__name__)


class LinearProjection(nn.Module):
    """[.., E] -> [.., D]: one linear map."""

    def __init__(self, text_dim: int, dim: int, dropout: Fraction = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = scaled_linear(nn.Linear(text_dim, dim), text_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x))


class MLPProjection(nn.Module):
    """[.., E] -> [.., D]: Linear(E, E) - GELU - Linear(E, D)."""

    def __init__(self, text_dim: int, dim: int, dropout: Fraction = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            scaled_linear(nn.Linear(text_dim, text_dim), text_dim, text_dim),
            nn.GELU(),
            scaled_linear(nn.Linear(text_dim, dim), text_dim, dim),
        )
        nn.init.normal_(self.net[1].weight, std=text_dim**-0.5)  # unit variance into the GELU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MoEAdaptor(nn.Module):
    """The UniSRec adaptor (Hou et al., KDD 2022): parametric whitening experts mixed by a gate.

    Expert k maps ``(x - b_k) W_k`` (a learned centring and projection); the gate is a softmax over
    ``x W_g`` (zero at the start: the experts are averaged). UniSRec's noisy gating is left out
    (deterministic evaluation; it did not matter in its ablation).
    """

    def __init__(
        self, text_dim: int, dim: int, num_experts: PositiveInt = 8, dropout: Fraction = 0.1
    ):
        super().__init__()
        if num_experts < 1:
            raise ConfigError(f"model.item.projection.num_experts={num_experts}: use at least 1")
        self.dropout = nn.Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(num_experts, text_dim))
        # the gate averages the experts at the start: each one is sqrt(K) wider so the mean keeps the scale
        self.weight = nn.Parameter(torch.randn(num_experts, text_dim, dim) * (num_experts / (text_dim * dim)) ** 0.5)
        self.gate = nn.Parameter(torch.zeros(text_dim, num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        experts = torch.einsum("nke,ked->nkd", x.unsqueeze(1) - self.bias, self.weight)  # [N, K, D]
        gates = torch.softmax(x @ self.gate, dim=-1)  # [N, K]
        return (gates.unsqueeze(-1) * experts).sum(1)


class TextItems(ItemRepresentation):
    """Item table = projection(standardised text vectors); row 0 (padding) is zero."""

    _eval_table: torch.Tensor | None = None

    def __init__(
        self,
        spec: DataSpec,
        dim: int,
        text: ItemTextEncoder,
        projection: Callable[..., nn.Module],
    ):
        super().__init__(spec, dim)
        self.text = text
        texts = text.texts(spec.item_fields, spec.num_items)
        vectors = text.item_vectors(texts)  # [N, E] from the frozen model (cached)
        E = vectors.shape[1]
        self.text_dim = E
        # standardisation constants of the frozen model's vectors (kept when it is fine-tuned)
        self.register_buffer("center", vectors.mean(0), persistent=False)
        self.register_buffer("spread", (vectors - vectors.mean(0)).std().clamp(min=1e-6), persistent=False)
        self.register_buffer("vectors", torch.cat([vectors.new_zeros(1, E), vectors]), persistent=False)
        self.projection = projection(text_dim=E, dim=dim)
        self.tuner: LanguageModelTuner | None = None
        if text.finetune.get("top_layers") or text.finetune.get("lora"):
            self.tuner = LanguageModelTuner(text, texts)

        self._eval_table: torch.Tensor | None = None  # the projected table, kept while evaluating
        self.register_load_state_dict_post_hook(lambda module, _: module.forget_table())

    def text_table(self, batch: Batch | None = None) -> torch.Tensor:
        """[N + 1, D] projected text vectors (row 0 = padding, zero).

        In evaluation without gradients the projection is computed once and kept until the module
        trains again, loads weights, moves or refreshes: every evaluation batch scores the same table.
        """
        if not self.training and self._eval_table is not None and not torch.is_grad_enabled():
            return self._eval_table
        vectors = self.vectors
        if self.tuner is not None and self.training and batch is not None:
            vectors = self.tuner.fresh_rows(vectors, batch)
        table = self.projection((vectors - self.center) / self.spread)
        table = table * (torch.arange(table.shape[0], device=table.device) > 0).unsqueeze(-1)
        if not self.training and not torch.is_grad_enabled():
            self._eval_table = table
        return table

    def forget_table(self) -> None:
        self._eval_table = None

    def train(self, mode: bool = True) -> TextItems:
        self.forget_table()
        return super().train(mode)

    def _apply(self, fn, recurse=True):  # .to(device), .half(): the kept table would be stale
        self.forget_table()
        return super()._apply(fn, recurse)

    def forward(self, batch: Batch | None = None) -> torch.Tensor:
        return self.text_table(batch)

    def refresh(self) -> None:
        self.forget_table()
        if self.tuner is not None:
            self.tuner.refresh(self.vectors)

    def parameter_groups(self) -> list[dict]:
        return [] if self.tuner is None else self.tuner.parameter_groups()


class IdTextItems(TextItems):
    """Item table from an id embedding and the projected text vector, fused by ``fusion``.

    An item without training events has the text part alone (its id vector never had a positive
    example). ``id_dropout`` > 0 (DropoutNet, Volkovs et al. NeurIPS 2017) also drops the id part of
    that share of the items, drawn anew at every training step, so the model learns to rank items
    from their text alone: without it the fused score leans on the id part and the text-only rows
    of cold items rank low.
    """

    def __init__(
        self,
        spec: DataSpec,
        dim: int,
        text: ItemTextEncoder,
        projection: Callable[..., nn.Module],
        fusion: Callable[..., IdTextFusion] = AddIdText,
        id_dropout: Fraction = 0.0,
    ):
        if not callable(fusion):  # a config saved before the fusion was a _target_
            raise ConfigError(
                f"model.item.fusion={fusion!r}: the fusion is a config group now; choose it with "
                "model/item/fusion=add, concat or gate"
            )
        super().__init__(spec, dim, text, projection)
        self.ids = IdEmbedding(spec, dim)
        # items without training events (cold) have an id vector no positive example ever moved:
        # it is random (and pushed down as a negative), so their rows take the text part alone
        counts = spec.item_train_counts
        trained = torch.ones(spec.num_items + 1) if counts is None else torch.as_tensor(counts > 0).float()
        self.register_buffer("trained", trained.unsqueeze(-1), persistent=False)
        self.id_dropout = id_dropout
        self.fusion = fusion(dim=dim)

    def forward(self, batch: Batch | None = None) -> torch.Tensor:
        keep = self.trained
        if self.training and self.id_dropout > 0:
            keep = keep * (torch.rand(keep.shape, device=keep.device) >= self.id_dropout)
        return self.fusion(self.ids() * keep, self.text_table(batch), keep)


class LanguageModelTuner(nn.Module):
    """The language model as a trainable part of the item representation (top layers or LoRA)."""

    def __init__(self, text: ItemTextEncoder, texts: list[str]):
        super().__init__()
        settings = text.finetune
        tokenizer, language_model = text.load()
        tokens = text.tokenize(tokenizer, texts)
        self.text = text
        self.lr = settings.get("lr")
        self.max_items = int(settings.get("max_items_per_step") or 512)
        self.register_buffer("input_ids", _pad_row(tokens["input_ids"]), persistent=False)
        self.register_buffer("attention_mask", _pad_row(tokens["attention_mask"]), persistent=False)
        self.generator = torch.Generator().manual_seed(int(settings.get("seed") or 0))
        for parameter in language_model.parameters():
            parameter.requires_grad_(False)
        lora = settings.get("lora")
        top = int(settings.get("top_layers") or 0)
        if lora and top:
            raise ConfigError("item_text.finetune: set top_layers or lora, not both")
        if lora:
            language_model = _with_lora(language_model, dict(lora))
        else:
            layers = _transformer_layers(language_model)
            if not 1 <= top <= len(layers):
                raise ConfigError(
                    f"item_text.finetune.top_layers={top}: the language model has {len(layers)} layers; use 1..{len(layers)}"
                )
            for layer in layers[len(layers) - top :]:
                for parameter in layer.parameters():
                    parameter.requires_grad_(True)
        self.language_model = language_model
        self.stale = False  # trained (or loaded) since the last refresh
        # weights loaded from a checkpoint (evaluation, the best epoch, init_from): encode again
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "stale", True))
        trainable = sum(p.numel() for p in language_model.parameters() if p.requires_grad)
        log.info("Language model fine-tuning: %d trainable parameters (%s)", trainable, "LoRA" if lora else f"top {top} layers")

    def encode_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """[R] item indices (>= 1) -> [R, E] pooled vectors with gradients."""
        ids, mask = self.input_ids[rows], self.attention_mask[rows]
        width = int(mask.sum(1).max())
        ids, mask = ids[:, :width], mask[:, :width]
        hidden = self.language_model(input_ids=ids, attention_mask=mask).last_hidden_state
        return pool(hidden, mask, self.text.pooling).float()

    def fresh_rows(self, vectors: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The epoch's table with the batch's items encoded again (with gradients)."""
        items = torch.cat([batch["items"].flatten(), batch["targets"].flatten()])
        rows = torch.unique(items[(items > 0) & (items < vectors.shape[0])])  # not [MASK] (task=cloze)
        if len(rows) > self.max_items:
            pick = torch.randperm(len(rows), generator=self.generator)[: self.max_items]
            rows = rows[pick.to(rows.device)]
        self.stale = True
        out = vectors.clone()
        out[rows] = self.encode_rows(rows)
        return out

    @torch.no_grad()
    def refresh(self, vectors: torch.Tensor) -> None:
        """Encode every item with the current weights into ``vectors`` (in place)."""
        if not self.stale:
            return
        was_training = self.language_model.training
        self.language_model.eval()
        n = vectors.shape[0] - 1
        for i in range(1, n + 1, self.text.batch_size):
            rows = torch.arange(i, min(i + self.text.batch_size, n + 1), device=vectors.device)
            vectors[rows] = self.encode_rows(rows)
        self.language_model.train(was_training)
        self.stale = False

    def parameter_groups(self) -> list[dict]:
        params = [p for p in self.language_model.parameters() if p.requires_grad]
        return [{"params": params, **({} if self.lr is None else {"lr": float(self.lr)})}]


def _pad_row(x: torch.Tensor) -> torch.Tensor:
    """Prepend a row of zeros (item 0, padding) to [N, T] tokens."""
    return torch.cat([x.new_zeros(1, x.shape[1]), x])


def _transformer_layers(language_model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a Hugging Face encoder (the longest ModuleList of blocks)."""
    lists = [m for m in language_model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ConfigError("item_text.finetune.top_layers: the language model has no list of layers to train")
    return max(lists, key=len)


def _with_lora(language_model: nn.Module, settings: dict) -> nn.Module:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError(
            "item_text.finetune.lora needs the peft package: pip install 'recsys-cli[text]' (or pip install peft)"
        ) from None
    config = LoraConfig(
        r=int(settings.get("r", 8)),
        lora_alpha=int(settings.get("alpha", 16)),
        lora_dropout=float(settings.get("dropout", 0.1)),
        target_modules=list(settings.get("target_modules") or ["query", "value"]),
    )
    try:
        return get_peft_model(language_model, config)
    except ValueError as err:
        raise ConfigError(f"item_text.finetune.lora: {str(err).splitlines()[0][:200]}") from None
