#!/usr/bin/env bash
# Installs every Debian package shrink's build, tests and benchmarks need. Idempotent; run as root
# (or with sudo available). Usage: scripts/install-deps.sh
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  clang libclang-rt-14-dev            # libFuzzer + ASan/UBSan targets
  libdnnl-dev                         # oneDNN: fp32/int8 GEMM reference and fast path
  ocl-icd-opencl-dev opencl-headers   # oneDNN's CMake config requires OpenCL even for CPU-only use
  libsentencepiece-dev                # SentencePiece .model tokenizers
  libicu-dev                          # tokenizers: Unicode normalization and character categories
  nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libfmt-dev libspdlog-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-numpy               # independent numpy reference implementations in tests/reference
  zlib1g-dev                          # reading gzip'd data sets (Fashion-MNIST IDX files)
  liblapack-dev                       # low-rank: LAPACK dsyevd for the truncated SVD
  dataset-fashion-mnist               # image classification data for training and the demo
  openmpi-bin libopenmpi-dev          # shrink sweep under mpirun: configurations split across ranks
  chromium                            # report test: renders the HTML report headless and checks the plots
  haproxy curl                        # serve: two replicas behind a load balancer (deploy/test_haproxy.sh)
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
