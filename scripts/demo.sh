#!/usr/bin/env bash
# Installs dependencies, builds, and runs the main job: `shrink demo` trains a ViT teacher on Fashion-MNIST (from
# the Debian package; cached in ~/.cache/shrink after the first run), distills, prunes and quantizes it alone and
# chained, prints one table (accuracy, agreement, latency percentiles, size, energy, cost per 1,000) and writes
# out/demo/report.html. Usage: scripts/demo.sh [shrink demo flags, e.g. --fresh]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh --target shrink
build/shrink demo "$@"
