"""The machine's float64 multiply-add peak, so that a kernel figure means the same on any CPU.

``ncap._core.fma_peak`` runs a register-bound loop of independent multiply-adds
(no memory traffic) with each instruction set's kernels (generic, AVX2,
AVX-512; compiled with the same flags as the kernel) on one thread and on all
threads, and reports multiply-adds per second; the machine's peak is the best
of them. ``bench_core.py`` divides the kernel's numerator work by its time and
by this peak.

Run:  python bench/bench_peak.py              (a table)
      python -m pytest bench/bench_peak.py     (the same, as pytest-benchmark rows)
"""

from __future__ import annotations

import os
import platform

import pytest

from ncap import _core


def cpu_model() -> tuple[str, list[str]]:
    """Model name and flags from /proc/cpuinfo (empty where there is none)."""
    name, flags = platform.processor(), []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = value.split()
                    break
    except OSError:
        pass
    return name, flags


def measure_peak(seconds: float = 0.2, repeats: int = 5) -> dict:
    """Peak multiply-adds per second: per instruction set, on 1 and on all threads.

    Returns {"one_thread": best 1-thread rate, "all_threads": best all-thread rate,
    "threads": all threads, "rows": [(isa, threads, rate), ...]}.
    """
    rows = []
    threads_all = _core.available_threads()
    for isa in _core.supported_isas():
        for threads in sorted({1, threads_all}):
            rate = _core.fma_peak(threads, seconds, isa, repeats)["fmas_per_second"]
            rows.append((isa, threads, rate))
    one = max(r for _, t, r in rows if t == 1)
    every = max(r for _, t, r in rows if t == threads_all)
    return {"one_thread": one, "all_threads": every, "threads": threads_all, "rows": rows}


@pytest.mark.parametrize("isa", _core.supported_isas())
@pytest.mark.parametrize("threads", sorted({1, _core.available_threads()}))
def test_fma_peak(benchmark, isa, threads):
    """One pass of the register-bound loop; extra_info holds its multiply-adds per second."""
    result = benchmark.pedantic(
        _core.fma_peak, args=(threads, 0.05, isa, 1), rounds=5, warmup_rounds=1
    )
    benchmark.group = "fma peak"
    benchmark.extra_info.update(
        impl=f"peak-{isa}-{threads}t", fmas_per_second=result["fmas_per_second"]
    )
    assert result["fmas_per_second"] > 0


def main() -> None:
    name, flags = cpu_model()
    peak = measure_peak()
    print(f"# {name}, {os.cpu_count()} CPUs, kernels: {_core.isa()}")
    simd = [f for f in flags if f.startswith(("avx", "fma", "sse4"))]
    print(f"# SIMD flags: {' '.join(simd)}")
    print("| instruction set | threads | float64 multiply-adds / s |")
    print("|---|---|---|")
    for isa, threads, rate in peak["rows"]:
        print(f"| {isa} | {threads} | {rate / 1e9:.1f} G |")
    print(
        f"peak: {peak['one_thread'] / 1e9:.1f} G/s on one thread, "
        f"{peak['all_threads'] / 1e9:.1f} G/s on {peak['threads']}"
    )


if __name__ == "__main__":
    main()
