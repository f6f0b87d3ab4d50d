#!/usr/bin/env bash
# Installs dependencies, builds, and runs the main job. Until `shrink demo` lands (issue 6) the main
# job is: write a GPT-2-shape random-weight model with `shrink synth`, generate from it, benchmark it.
# Usage: scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh --target shrink
mkdir -p out
if [ ! -f out/gpt2-synth/config.json ]; then
  build/shrink synth --preset gpt2 --out out/gpt2-synth
fi
build/shrink info out/gpt2-synth > out/gpt2-synth.info  # (piping into head would end it with SIGPIPE)
head -8 out/gpt2-synth.info
echo "--- generate (random weights: the text is noise; the timings are real)"
build/shrink generate out/gpt2-synth --prompt "The quick brown fox" -n 32 --no-stop
echo "--- bench: prompt 128 tokens, 32 generated"
build/shrink bench out/gpt2-synth --prompt-len 128 --gen 32 --iters 3
