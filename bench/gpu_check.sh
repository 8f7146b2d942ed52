#!/usr/bin/env bash
# The GPU check, one command on a fresh machine with an NVIDIA GPU, nvcc,
# CMake, ninja, pybind11, numpy and pytest (TensorFlow optional):
#   1. builds ncap's CPU and CUDA modules with CMake (NCAP_CUDA=ON) for this
#      machine's GPU (NCAP_CUDA_ARCH to override, e.g. "80;90");
#   2. runs the GPU tests (pytest -m gpu, with NCAP_REQUIRE_GPU=1 so that a
#      missing module or GPU fails instead of skipping) and the dispatch tests;
#   3. runs bench/gpu_bench.py: CPU kernel vs CUDA kernel vs the TF closed
#      form on the GPU, traces up to 2048-1024-512-256-100 at B = 4096, every
#      result checked against the CPU kernel; run even when step 2 failed;
#   4. prints one summary. A failed step prints the tail of its log.
# Exit status: 0 only if the build, both test runs and the bench all passed.
#
# Usage: bash bench/gpu_check.sh [OUT_DIR]      (a few minutes; the build is most of it)
# Environment: PYTHON (default python3), NCAP_CUDA_ARCH, NCAP_GPU_CHECK_BUILD
# (default build/gpu-check). Logs and bench.json go to OUT_DIR (default $OUT,
# else /tmp/ncap-gpu-check).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/ncap-gpu-check}}
mkdir -p "$out"
py=${PYTHON:-python3}
build=${NCAP_GPU_CHECK_BUILD:-build/gpu-check}
pkg=$(mktemp -d)
trap 'rm -rf "$pkg"' EXIT

step() {  # step NAME LOG TIMEOUT_S COMMAND...: runs it, keeps its status, shows the log's tail on failure
  local name=$1 log=$2 limit=$3
  shift 3
  local start=$SECONDS
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  local took=$((SECONDS - start))
  if [ "$rc" -eq 0 ]; then
    status[$name]="ok (${took} s)"
  else
    [ "$rc" -eq 124 ] && status[$name]="TIMED OUT after ${limit} s" || status[$name]="FAILED (exit $rc, ${took} s)"
    echo "---- $name failed: last lines of $log ----"
    tail -n 40 "$log"
    echo "----"
  fi
  return "$rc"
}
declare -A status
failed=0

gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | head -n 1)
echo "GPU: $gpu" | tee "$out/gpu.txt"
arch=${NCAP_CUDA_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')}
arch=${arch:-native}

build_modules() {
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNCAP_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" \
    -DPython_EXECUTABLE="$(command -v "$py")" -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" &&
    cmake --build "$build"
}
export -f build_modules
export build arch py
if ! step build "$out/build.log" 420 bash -c build_modules; then
  echo "== ncap GPU check: the build failed; nothing to test =="
  exit 1
fi

# A throwaway copy of the package with the freshly built modules in it.
cp -r src/ncap "$pkg/ncap"
rm -f "$pkg"/ncap/_core*.so
cp "$build"/_core*.so "$build"/cuda/_core_cuda*.so "$pkg/ncap/"
export PYTHONPATH="$pkg"

step gpu_tests "$out/gpu_tests.log" 300 env NCAP_REQUIRE_GPU=1 \
  "$py" -m pytest -q -p no:cacheprovider -m gpu tests/arrays/test_gpu.py || failed=1
step dispatch_tests "$out/dispatch_tests.log" 120 \
  "$py" -m pytest -q -p no:cacheprovider tests/arrays/test_cuda_dispatch.py || failed=1
step bench "$out/bench.log" 300 "$py" bench/gpu_bench.py --json "$out/bench.json" || failed=1

echo
echo "== ncap GPU check summary =="
echo "GPU (name, driver, memory, compute capability): $gpu; built for: $arch"
echo "build:          ${status[build]}"
echo "GPU tests:      ${status[gpu_tests]} -- $(tail -n 1 "$out/gpu_tests.log")"
echo "dispatch tests: ${status[dispatch_tests]} -- $(tail -n 1 "$out/dispatch_tests.log")"
echo "bench:          ${status[bench]}"
grep -v '^ *$' "$out/bench.log" | sed 's/^/  /'
echo "logs: $out"
exit "$failed"
