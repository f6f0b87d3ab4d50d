#!/usr/bin/env bash
# Serving benchmark (NOT in CI): closed-loop load at concurrency 1..32 against `shrink serve` for
#   1. BERT-base-shape W8A8 (shrink synth --preset bert-base, shrink quantize --scheme w8a8), route classify;
#   2. TinyLlama-shape W4A16 (shrink synth --preset tinyllama-1.1b, --scheme w4a16), route generate;
#   3. a 2x-overload run on the BERT server: twice the clients the server sustains, small --max-queue: admitted
#      requests' p99 stays bounded, everything else is 429, server memory is sampled throughout.
# Results (JSON lines) go to OUT (default build-serve/bench-serve); figures are copied into docs/serving.md by hand.
# Usage: scripts/bench-serve.sh [SHRINK] [SECONDS_PER_LEVEL] [SOAK_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
shrink="${1:-build-serve/shrink}"
secs="${2:-10}"
soak="${3:-600}"
out="${OUT:-build-serve/bench-serve}"
mkdir -p "$out"
export OMP_WAIT_POLICY=passive

pid=""
stop_server() { if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi; }
trap stop_server EXIT

start_server() {  # start_server MODEL extra-flags...
  local model="$1"; shift
  rm -f "$out/port"
  "$shrink" serve "$model" --port 0 --port-file "$out/port" "$@" 2>>"$out/server.log" &
  pid=$!
  for _ in $(seq 600); do [ -s "$out/port" ] && break; sleep 0.5; done
  [ -s "$out/port" ] || { echo "server did not start; see $out/server.log" >&2; exit 1; }
  url="http://127.0.0.1:$(cat "$out/port")"
}

model_dir() {  # model_dir PRESET SCHEME: synthesize and quantize once
  local preset="$1" scheme="$2" dir="$out/models/$1-$2"
  if [ ! -f "$dir/config.json" ]; then
    "$shrink" synth --preset "$preset" --out "$out/models/$preset" --json >/dev/null
    "$shrink" quantize "$out/models/$preset" --scheme "$scheme" --out "$dir" --json >/dev/null
  fi
  echo "$dir"
}

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"

bert=$(model_dir bert-base w8a8)
start_server "$bert" --max-batch 16 --batch-wait-ms 2 --max-queue 64
echo "== BERT-base W8A8 classify"
"$shrink" loadtest "$url" --route classify --concurrency 1,2,4,8,16,32 --seconds "$secs" --pid "$pid" | tee "$out/bert.txt"
stop_server

# 2x overload: the server holds at most 8 requests (4 running + 4 waiting); 16 clients offer twice that. Admitted
# requests' p99 stays bounded, the rest get 429 at once, server memory is sampled over the soak.
start_server "$bert" --max-batch 4 --batch-wait-ms 2 --max-queue 4
echo "== BERT-base W8A8 classify, 2x overload (16 clients, --max-batch 4 --max-queue 4), ${soak}s soak"
"$shrink" loadtest "$url" --route classify --concurrency 16 --seconds "$soak" --pid "$pid" | tee "$out/overload.txt"
stop_server

llama=$(model_dir tinyllama-1.1b w4a16)
start_server "$llama" --max-queue 64 --kv-budget-mb 2048
echo '{"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}' >"$out/gen8.json"
echo "== TinyLlama W4A16 generate (8 new tokens, greedy)"
"$shrink" loadtest "$url" --route generate --body "$out/gen8.json" --concurrency 1,2,4,8,16,32 --seconds "$((secs * 2))" \
  --pid "$pid" | tee "$out/llama.txt"
stop_server
echo "bench-serve: results in $out"
