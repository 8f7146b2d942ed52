#!/usr/bin/env bash
# Builds ncap._core_cuda against the host emulation of the CUDA runtime
# (cuda/emulation/cuda_runtime.h: kernels compiled as C++, one fiber per CUDA
# thread, two emulated devices of 1 GiB each) and runs the GPU tests and the
# CUDA dispatch tests against it. Needs no GPU and no nvcc; catches wrong
# indexing, strides, offsets, barriers, error clearing, device restore and
# deleter counts, not stream races (the emulation runs everything in order).
#
#   cuda/emulation/run_tests.sh [extra pytest args]
#
# Environment: PYTHON (default python3), NCAP_EMULATION_BUILD (default
# build/cuda-emulation). The emulated module is imported from a temporary copy
# of the package; src/ncap is never touched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
py=${PYTHON:-python3}
build=${NCAP_EMULATION_BUILD:-build/cuda-emulation}
pkg=$(mktemp -d)
trap 'rm -rf "$pkg"' EXIT

if ! { cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNCAP_CUDA_EMULATION=ON \
         -DPython_EXECUTABLE="$(command -v "$py")" -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" &&
       cmake --build "$build"; } > "$pkg/build.log" 2>&1; then
  tail -n 40 "$pkg/build.log"
  echo "emulated CUDA build failed (log above)" >&2
  exit 1
fi
cp -r src/ncap "$pkg/ncap"
rm -f "$pkg"/ncap/_core*.so
cp "$build"/_core*.so "$build"/cuda/_core_cuda*.so "$pkg/ncap/"
PYTHONPATH="$pkg" NCAP_REQUIRE_GPU=1 "$py" -m pytest -q -p no:cacheprovider \
  tests/arrays/test_gpu.py tests/arrays/test_cuda_dispatch.py "$@"
