#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite: unit + parity tests (ctest), then
# the fuzz corpora replay and a short fuzzing run per target (clang, ASan+UBSan).
# Usage: scripts/test.sh            (FUZZ_SECONDS=30 by default; FUZZ_SECONDS=0 replays corpora only)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/phase.sh
phase install-deps scripts/install-deps.sh
phase build scripts/build.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# ctest -j runs several multi-threaded tests on the same cores: OpenMP threads that spin while they wait burn the
# cores the other tests need (user CPU of test_smoothquant + test_calibration side by side: 85 s spinning, 12 s
# passive). Same threads, same work, same assertions; only how idle threads wait.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
set +e
phase ctest bash -c 'cd build && ctest --output-on-failure -j "$(nproc)" --timeout 900' 2>&1 | tee "$log"
ctest_rc=${PIPESTATUS[0]}
set -e
fuzz_rc=0
scripts/fuzz.sh "${FUZZ_SECONDS:-30}" || fuzz_rc=$?  # prints its own build and run times
summary=$(grep -E '^[0-9]+% tests passed' "$log" | tail -1)
passed=$(sed -nE 's/.*tests passed, ([0-9]+) tests failed out of ([0-9]+).*/\2 \1/p' <<<"$summary")
read -r total failed <<<"${passed:-0 0}"
echo "fuzz: $([ "$fuzz_rc" -eq 0 ] && echo clean || echo "FAILED (exit $fuzz_rc)")"
echo "tests: $((total - failed)) passed, $failed failed"
[ "$ctest_rc" -eq 0 ] && [ "$fuzz_rc" -eq 0 ]
