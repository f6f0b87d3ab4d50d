#!/usr/bin/env bash
# Builds every libFuzzer target tests/fuzz/fuzz_<name>.cc (clang, ASan + UBSan) in build-fuzz, replays
# each target's seed corpus tests/fuzz/corpus/<name>/, then fuzzes each for SECONDS (default 30; 0 =
# replay only) on a scratch copy of the corpus, so the repository is never modified.
# Exits non-zero if any target crashes; crashing inputs are kept in build-fuzz/artifacts/<name>/.
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/phase.sh

secs="${1:-30}"
if ! [[ "$secs" =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS]   (SECONDS per target, 0 = replay the corpora only)" >&2
  exit 2
fi
build=build-fuzz
jobs="$(nproc)"

# Warnings are enforced by the regular (gcc) build; clang's set differs and must not block fuzzing.
# Build type Fuzz = -O1 -g -DNDEBUG (see CMakeLists.txt); only the parsers are compiled (shrink_fuzzlib).
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Fuzz -DSHRINK_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DSHRINK_TESTS=OFF -DSHRINK_BENCH=OFF -DSHRINK_WERROR=OFF >/dev/null
phase fuzz-build cmake --build "$build" -j "$jobs"
fuzz_t0=$SECONDS

scratch="$(mktemp -d "${TMPDIR:-/tmp}/shrink-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

failed=()
shopt -s nullglob
sources=(tests/fuzz/fuzz_*.cc)
if [ ${#sources[@]} -eq 0 ]; then
  echo "fuzz: no tests/fuzz/fuzz_*.cc targets" >&2
  exit 1
fi
for src in "${sources[@]}"; do
  target="$(basename "$src" .cc)"
  name="${target#fuzz_}"
  bin="$build/$target"
  corpus="$scratch/$name"
  artifacts="$build/artifacts/$name"
  mkdir -p "$corpus" "$artifacts"
  if [ -d "tests/fuzz/corpus/$name" ]; then cp -R "tests/fuzz/corpus/$name/." "$corpus/"; fi
  log="$build/artifacts/$name.log"
  seeds=$(find "$corpus" -type f | wc -l)

  echo "== $target: replaying $seeds seeds"
  if ! "$bin" -runs=0 -timeout=10 -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1; then
    echo "!! $target crashed on its seed corpus; see $log"
    tail -n 30 "$log"
    failed+=("$target (replay)")
    continue
  fi
  [ "$secs" -eq 0 ] && continue

  echo "== $target: fuzzing for ${secs}s"
  if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1; then
    echo "!! $target crashed; input kept in $artifacts/, log in $log"
    tail -n 40 "$log"
    failed+=("$target")
    continue
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$log" | sed "s/^/   /" || true
done

echo "time: fuzz-run $((SECONDS - fuzz_t0)) s wall"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (add each crashing input to tests/fuzz/corpus/<name>/ once fixed)" >&2
  exit 1
fi
echo "fuzz: all ${#sources[@]} targets clean"
