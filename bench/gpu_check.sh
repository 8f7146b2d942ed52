#!/usr/bin/env bash
# One short GPU check for a machine with an NVIDIA GPU, nvcc, CMake, ninja,
# pybind11, numpy and pytest (e.g. the project's lent H200 machine):
#   1. builds ncap's CPU and CUDA modules with CMake (NCAP_CUDA=ON),
#   2. runs the GPU tests (CUDA kernel vs CPU kernel on random traces),
#   3. times both kernels on a large trace (bench/gpu_bench.py).
# Usage: bash bench/gpu_check.sh [OUT_DIR]     (about 2-3 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/ncap-gpu-check}}
mkdir -p "$out"
py=${PYTHON:-python3}
build=build/gpu-check
pkg=$(mktemp -d)

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt" || true
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNCAP_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${NCAP_CUDA_ARCH:-90}" \
  -DPython_EXECUTABLE="$(command -v "$py")" -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" \
  > "$out/cmake.log" 2>&1
cmake --build "$build" > "$out/build.log" 2>&1

# A throwaway copy of the package with the freshly built modules in it.
cp -r src/ncap "$pkg/ncap"
rm -f "$pkg"/ncap/_core*.so
cp "$build"/_core*.so "$build"/cuda/_core_cuda*.so "$pkg/ncap/"
export PYTHONPATH="$pkg:tests"

"$py" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$out/gpu_tests.log"
"$py" -m pytest -q -p no:cacheprovider tests/test_cuda_dispatch.py 2>&1 | tee -a "$out/gpu_tests.log"
"$py" bench/gpu_bench.py 2>&1 | tee "$out/gpu_bench.txt"
