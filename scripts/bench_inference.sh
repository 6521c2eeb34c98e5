#!/usr/bin/env bash
# Recommendation throughput and peak memory, and export size / agreement / latency, of one run.
#   scripts/bench_inference.sh CKPT OUT_DIR [REPEATS] [extra overrides of the run's config...]
# Runs `recsys recommend` REPEATS times (every user of the run's data, k=20) under /usr/bin/time
# (peak resident memory), then `recsys export` for onnx / torchscript, float32 / int8. Each line
# of OUT_DIR/recommend.txt is one repeat: users/s as the command printed it, and the peak RSS.
# The cores may be shared: report medians, and the load average printed before and after.
set -euo pipefail
ckpt=$1; out=$2; repeats=${3:-3}; shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$out"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/load.txt"
: > "$out/recommend.txt"
for i in $(seq "$repeats"); do
  /usr/bin/time -f "peak_rss_kb %M" -o "$out/time-$i.txt" \
    python -m recsys_cli.cli recommend "ckpt=$ckpt" k=20 "output=$out/recs.parquet" overwrite=true "$@" \
    > "$out/recommend-$i.log" 2>&1
  echo "$(grep -o '([0-9]* users/s)' "$out/recommend-$i.log") $(cat "$out/time-$i.txt")" | tee -a "$out/recommend.txt"
done
for fmt in onnx torchscript; do
  for q in null int8; do
    python -m recsys_cli.cli export "ckpt=$ckpt" "format=$fmt" "quantize=$q" "output=$out/export-$fmt-$q" overwrite=true "$@" \
      2>&1 | grep -E "^(Exported|Check|CPU latency)" | tee "$out/export-$fmt-$q.txt"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt"
