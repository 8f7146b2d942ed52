#!/usr/bin/env bash
# Build ncap's C++ core with AddressSanitizer + UndefinedBehaviorSanitizer and
# run the core tests against that build.
#
#   scripts/sanitize.sh [extra pytest args]
#
# The sanitized module is built in build/asan and imported from a temporary
# copy of the package, so src/ncap/_core*.so is never touched. Exits non-zero
# when the build fails, a test fails, or any sanitizer report appears (ASan
# aborts on its first error; UBSan is compiled with -fno-sanitize-recover and
# halt_on_error=1; the log is also searched for reports as a second guard).
#
# Environment:
#   PYTHON              interpreter with numpy, pytest, hypothesis and pybind11
#                       (default: python3)
#   NCAP_ASAN_BUILD     build directory (default: build/asan)
#   NCAP_SANITIZE_TESTS test files (default: tests/arrays/test_core_*.py
#                       tests/arrays/test_fuzz.py tests/arrays/test_threads.py
#                       tests/arrays/test_large.py, those that exist).
#                       Every instruction set's kernels run (test_core_strategies.py
#                       forces each one the CPU has). Not run here: tests that start
#                       TensorFlow in a subprocess (TF's uninstrumented code under the
#                       ASan runtime), tests/arrays/test_memory.py (ASan's quarantine
#                       grows RSS by design), and the refusal tests under RLIMIT_AS
#                       (ASan's shadow memory does not fit under the limit; ASan also
#                       aborts on a failed huge allocation instead of throwing
#                       std::bad_alloc).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
BUILD="${NCAP_ASAN_BUILD:-build/asan}"
CXX="${CXX:-g++}"
CC="${CC:-gcc}"

LIBASAN="$("$CXX" -print-file-name=libasan.so)"
# Python is a C program: without libstdc++ preloaded next to the ASan runtime,
# ASan's __cxa_throw interceptor finds no real __cxa_throw and the first C++
# exception (any ValueError raised by the core) aborts with "CHECK failed".
LIBSTDCXX="$("$CXX" -print-file-name=libstdc++.so)"
if [[ ! -e "$LIBASAN" ]]; then
  echo "sanitize.sh: libasan.so not found for $CXX (install the compiler's sanitizer runtime)" >&2
  exit 2
fi

mkdir -p "$(dirname "$BUILD")"  # the configure log sits beside the build directory
echo "== configure + build ($BUILD, NCAP_SANITIZE=ON)"
GENERATOR=()
if command -v ninja >/dev/null 2>&1; then GENERATOR=(-G Ninja); fi
cmake -S . -B "$BUILD" "${GENERATOR[@]}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" \
  -DNCAP_SANITIZE=ON -DNCAP_CUDA=OFF \
  -DPython_EXECUTABLE="$PYTHON" \
  -Dpybind11_DIR="$("$PYTHON" -m pybind11 --cmakedir)" >"$BUILD.configure.log" 2>&1 \
  || { cat "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" --target _core

SO="$(ls "$BUILD"/_core*.so | head -n 1)"
PKG_ROOT="$(mktemp -d "${TMPDIR:-/tmp}/ncap-asan.XXXXXX")"
LOG="$PKG_ROOT/pytest.log"
trap 'rm -rf "$PKG_ROOT"' EXIT
# A copy of the Python package with the sanitized module in place of the normal one.
mkdir -p "$PKG_ROOT/ncap"
(cd src/ncap && find . -name '*.py' -not -path '*/__pycache__/*' -print0 \
  | xargs -0 -I{} cp --parents {} "$PKG_ROOT/ncap/")
cp "$SO" "$PKG_ROOT/ncap/"

export LD_PRELOAD="$LIBASAN $LIBSTDCXX"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:strict_init_order=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONPATH="$PKG_ROOT:$ROOT/tests"
export PYTHONMALLOC=malloc  # let ASan see every allocation, not pymalloc's arenas
export TF_CPP_MIN_LOG_LEVEL=2

where="$("$PYTHON" -c 'import ncap._core as c; print(c.__file__)')"
case "$where" in
  "$PKG_ROOT"/*) echo "== sanitized module: $where" ;;
  *) echo "sanitize.sh: imported the wrong ncap._core: $where" >&2; exit 1 ;;
esac

if [[ -n "${NCAP_SANITIZE_TESTS:-}" ]]; then
  read -r -a TESTS <<<"$NCAP_SANITIZE_TESTS"
else
  TESTS=()
  for f in tests/arrays/test_core_*.py tests/arrays/test_fuzz.py tests/arrays/test_threads.py \
    tests/arrays/test_large.py; do
    [[ -e "$f" ]] && TESTS+=("$f")
  done
fi
if [[ ${#TESTS[@]} -eq 0 ]]; then echo "sanitize.sh: no test files to run" >&2; exit 2; fi
echo "== pytest ${TESTS[*]}"
set +e
"$PYTHON" -m pytest -p no:cacheprovider -q -m "not slow and not fuzz_long and not gpu" \
  -k "not absurd_sizes and not beyond_memory_limit and not count_in_the_memory_check and not non_float_tensors" \
  "${TESTS[@]}" "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
if grep -qE "AddressSanitizer|runtime error:|LeakSanitizer|UndefinedBehaviorSanitizer" "$LOG"; then
  echo "sanitize.sh: sanitizer report(s) found (see above)" >&2
  exit 1
fi
if [[ $status -ne 0 ]]; then
  echo "sanitize.sh: pytest exited with status $status" >&2
  exit "$status"
fi
echo "sanitize.sh: no sanitizer reports; tests passed"
