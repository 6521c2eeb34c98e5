#!/usr/bin/env bash
# RePlay's SASRec on the product's own split, in its own virtual environment (.venv-replay).
#   bash scripts/peers/run_replay.sh OUT_DIR [replay_sasrec.py options --] [recsys data overrides]
#   bash scripts/peers/run_replay.sh runs/peers/replay_s1 --seed 1 -- data=movielens data.path=../shared/data/ml-1m-users1-1500
# Makes .venv-replay on first use (replay-rec, lightning and the CPU build of torch; ~2 minutes),
# exports the split with this checkout (scripts/peers/export_split.py), trains RePlay on it and
# writes OUT_DIR/replay.json (see scripts/peers/replay_sasrec.py for what it holds).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: run_replay.sh OUT_DIR [options --] [data overrides]}; shift
opts=()
if [[ " $* " == *" -- "* ]]; then
  while [ "$1" != "--" ]; do opts+=("$1"); shift; done
  shift
fi
venv=${REPLAY_VENV:-.venv-replay}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -c scripts/constraints-cpu.txt "replay-rec==0.22.0" lightning
fi
python scripts/peers/export_split.py "$out/split" "$@" > /dev/null
"$venv/bin/python" scripts/peers/replay_sasrec.py "$out/split" --out "$out/replay.json" "${opts[@]}"
