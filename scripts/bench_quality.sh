#!/usr/bin/env bash
# The quality tables of the README, as Hydra sweeps (one summary.md / summary.csv per sweep).
#   bash scripts/bench_quality.sh [OUT_DIR] [ML100K_DIR]
# OUT_DIR defaults to runs/bench; ML100K_DIR (RecBole atomic files) to ../shared/data/ml-100k and
# is skipped when absent. Sequential on purpose: timings in the tables are then comparable.
# About 3 h 50 min on 2 CPU cores (the windows() sweeps with 10,000 users take 130 minutes). With
# FILTERED=1 the synthetic sweeps run once more with seen items filtered from the ranking
# (metrics.filter_seen=true; the README's last column) into OUT_DIR/filtered (about 45 minutes more).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/bench}
ml100k=${2:-../shared/data/ml-100k}
export WANDB_MODE=offline
q=(callbacks.progress_bar.refresh_rate=0)

synthetic() {  # synthetic() OUT [OVERRIDE...]
  local dir=$1
  shift
  recsys train -m model=popularity,markov scales=none "${q[@]}" "$@" hydra.sweep.dir="$dir/synthetic_baselines"
  recsys train -m +experiment=multiscale_synthetic model/encoder=gru,transformer \
    scales=none,session_only,all_only,session_all,session_day_month_all "${q[@]}" "$@" \
    hydra.sweep.dir="$dir/synthetic_scales"
  recsys train -m +experiment=multiscale_synthetic model/encoder=lstm scales=none,session_day_month_all \
    "${q[@]}" "$@" hydra.sweep.dir="$dir/synthetic_lstm"
}
windows() {  # a log on which windows in time carry information 50 recent events do not
  local w=(data.reader.buy_prob=0 data.reader.session_length=2 data.reader.session_focus=0.3)
  recsys train -m +experiment=multiscale_synthetic model/encoder=gru,transformer \
    scales=none,session_only,day_only,all_only,session_day_month_all "${w[@]}" "${q[@]}" \
    hydra.sweep.dir="$out/synthetic_windows"
  recsys train -m +experiment=multiscale_synthetic model/encoder=gru,transformer \
    scales=none,session_only,day_only,all_only,session_day_month_all "${w[@]}" data.reader.num_users=10000 \
    "${q[@]}" hydra.sweep.dir="$out/synthetic_windows_10k"
  recsys train -m +experiment=multiscale_synthetic model/encoder=gru,transformer \
    scales=none,session_day_month_all model.use_categories=true "${w[@]}" data.reader.num_users=10000 \
    "${q[@]}" hydra.sweep.dir="$out/synthetic_windows_10k_categories"
  recsys train -m +experiment=multiscale_synthetic model/encoder=gru scales=session_day_month_all \
    model/fusion=concat,attention,weighted "${w[@]}" data.reader.num_users=10000 "${q[@]}" \
    hydra.sweep.dir="$out/synthetic_windows_10k_fusion"
  recsys train -m +experiment=multiscale_synthetic model/encoder=gru scales=session_day_month_all \
    model.share_encoder=false,true scales.pooling=attention,mean "${w[@]}" data.reader.num_users=10000 \
    "${q[@]}" hydra.sweep.dir="$out/synthetic_windows_10k_encoders"
}
seeds() {  # two more seeds of the plain, best single-window and 4-scale models (seed 42 above)
  recsys train -m +experiment=multiscale_synthetic model/encoder=gru,transformer \
    scales=none,session_only,session_day_month_all seed=1,2 "${q[@]}" hydra.sweep.dir="$out/synthetic_seeds"
}

synthetic "$out"
seeds
windows
if [ "${FILTERED:-0}" = 1 ]; then
  synthetic "$out/filtered" metrics.filter_seen=true
fi
if [ -d "$ml100k" ]; then
  recsys train -m model=popularity,markov data=recbole data.path="$ml100k" scales=none "${q[@]}" \
    hydra.sweep.dir="$out/ml100k_baselines"
  recsys train -m +experiment=ml100k_sasrec data.path="$ml100k" seed=1,2,3 \
    scales=none,session_day_month_all "${q[@]}" hydra.sweep.dir="$out/ml100k_scales"
fi
for f in "$out"/*/summary.md "$out"/filtered/*/summary.md; do
  [ -f "$f" ] || continue
  echo "== $f"
  cat "$f"
done
