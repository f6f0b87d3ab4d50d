#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite: unit + parity tests (ctest), then
# the fuzz corpora replay and a short fuzzing run per target (clang, ASan+UBSan).
# Usage: scripts/test.sh            (FUZZ_SECONDS=30 by default; FUZZ_SECONDS=0 replays corpora only)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
(cd build && ctest --output-on-failure -j "$(nproc)" --timeout 900)
if [ -x scripts/fuzz.sh ]; then scripts/fuzz.sh "${FUZZ_SECONDS:-30}"; fi
