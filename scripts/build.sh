#!/usr/bin/env bash
# Configures and builds pagoda into build/ (Release, ccache, CUDA when nvcc exists).
# Extra arguments go to cmake, e.g. scripts/build.sh -DPAGODA_CUDA=OFF
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
# nvcc lives outside PATH on many machines; AUTO finds it there too.
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -- -j"$(nproc)"
