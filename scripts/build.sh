#!/usr/bin/env bash
# Configures and builds shrink with Ninja into build/ (Release).
# Usage: scripts/build.sh [--target T] [extra cmake -D args]   (tests on, benchmarks off unless given)
set -euo pipefail
cd "$(dirname "$0")/.."
target=()
if [ "${1:-}" = "--target" ]; then target=(--target "$2"); shift 2; fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHRINK_TESTS=ON -DSHRINK_BENCH=OFF "$@" >/dev/null
cmake --build build -j "$(nproc)" "${target[@]}"
