#!/usr/bin/env bash
# The README's tables for the seed methods: variational latent, user embedding, context features,
# Mult-VAE and item-kNN on ml-100k; the next-behaviour head on the synthetic shop log.
#   bash scripts/bench_seed_methods.sh [OUT_DIR] [ML100K_DIR]
# OUT_DIR defaults to runs/bench_seed_methods, ML100K_DIR to ../shared/data/ml-100k. Sequential.
# About 90 minutes on 2 CPU cores. Tables: python scripts/aggregate_sweep.py OUT_DIR/<sweep> ...
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/bench_seed_methods}
ml100k=${2:-../shared/data/ml-100k}
export WANDB_MODE=offline
q=(callbacks.progress_bar.refresh_rate=0)
ml=(+experiment=ml100k_sasrec "data.path=$ml100k")

# ml-100k, Transformer at the SASRec sizes: plain and each switch, 3 seeds
recsys train -m "${ml[@]}" seed=1,2,3 "${q[@]}" hydra.sweep.dir="$out/ml100k_plain"
recsys train -m "${ml[@]}" seed=1,2,3 model/latent=vae "${q[@]}" hydra.sweep.dir="$out/ml100k_vae"
recsys train -m "${ml[@]}" seed=1,2,3 model.user_embedding=true "${q[@]}" hydra.sweep.dir="$out/ml100k_user"
recsys train -m "${ml[@]}" seed=1,2,3 "model.context=[hour,weekday,gap]" "${q[@]}" hydra.sweep.dir="$out/ml100k_context"

# baselines on the same split: Mult-VAE (the paper's sizes, batch 500, up to 200 epochs; each
# user's history in one bag of up to 1,000 events), item-kNN, popularity, Markov
base=(data=recbole "data.path=$ml100k" scales=none metrics.filter_seen=true "${q[@]}")
recsys train -m model=multvae "${base[@]}" seed=1,2,3 data.max_len=1000 data.batch_size=500 \
  trainer.max_epochs=200 callbacks.early_stopping.patience=20 hydra.sweep.dir="$out/ml100k_multvae"
recsys train -m model=item_knn,popularity,markov "${base[@]}" hydra.sweep.dir="$out/ml100k_counts"

# the synthetic shop log (view / cart / buy): the default model with and without the
# next-behaviour head, 3 seeds
recsys train -m seed=1,2,3 objective.behaviour.weight=0,0.5 "${q[@]}" hydra.sweep.dir="$out/synthetic_behaviour"
