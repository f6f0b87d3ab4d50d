#!/usr/bin/env bash
# Long benchmarks (not in CI): kernel micro-benchmarks and the end-to-end figures of the issues.
# Writes JSON lines to out/bench/*.json and prints a summary. Usage: scripts/bench.sh [--threads N]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
scripts/build.sh -DSHRINK_BENCH=ON >/dev/null
mkdir -p out/bench out/models
for b in build/bench_*; do
  [ -x "$b" ] || continue
  echo "== $(basename "$b")"
  OMP_NUM_THREADS=$THREADS "$b" --benchmark_min_time=0.2 2>&1 | tee "out/bench/$(basename "$b").txt"
done
[ -f out/models/bert-base/config.json ] || build/shrink synth --preset bert-base --out out/models/bert-base
[ -f out/models/tinyllama-1.1b/config.json ] || build/shrink synth --preset tinyllama-1.1b --out out/models/tinyllama-1.1b
echo "== BERT-base 1x128 fp32 (floor = GFLOP / measured fp32 GEMM peak)"
build/shrink bench out/models/bert-base --batch 1 --seq 128 --threads "$THREADS" --peak --seconds 15 --json \
  | tee out/bench/bert-base-fp32.json
echo "== TinyLlama-1.1B fp32 decode (share of measured streaming-read bandwidth)"
build/shrink bench out/models/tinyllama-1.1b --prompt-len 16 --gen 32 --iters 3 --threads "$THREADS" --peak --json \
  | tee out/bench/tinyllama-fp32.json
