"""CPU kernel vs CUDA kernel vs the TF closed form on the GPU (run by bench/gpu_check.sh).

For every trace (batch reduction, float32 probe traces from bench_core.probe_trace):

* ``cpu``: ``ncap.beff`` on host arrays, the C++ kernel on all cores;
* ``cuda``: ``ncap.beff`` on GPU arrays (``DeviceArray``: DLPack, no copy, with
  the stream handshake), the CUDA kernel;
* ``cuda(tf)``: ``ncap.beff`` on TF GPU tensors (tf.Tensor refuses DLPack's
  stream argument, so each call waits for the whole device first);
* ``tf``: ``ncap.tf.ingraph.beta_in_graph`` in ``tf.function`` on TF GPU tensors.

Each figure is the median wall time of repeated calls after a warm-up (a TF
result is fetched to the host inside the timing). Every result is checked
against the CPU kernel to rounding (terms within 1e-10 of the same terms on
|inputs|): a mismatch is printed and the exit status is 1. Without TensorFlow
or without a GPU in TensorFlow, the TF columns say so.

    python bench/gpu_bench.py [--json results.json] [--quick]
"""

from __future__ import annotations

import os

# TensorFlow must not take the GPU's memory before ncap asks for its workspace.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import probe_trace  # noqa: E402

import ncap  # noqa: E402
from ncap.arrays import cuda as _cuda  # noqa: E402

TRACES = [
    ("reference", (2048, 256, 128, 64, 10), 64),
    ("B=1024", (2048, 256, 128, 64, 10), 1024),
    ("wide B=256", (2048, 1024, 512, 256, 100), 256),
    ("wide B=1024", (2048, 1024, 512, 256, 100), 1024),
    ("wide B=4096", (2048, 1024, 512, 256, 100), 4096),
]
TOL = 1e-10


def median_ms(fn, budget_s=1.0, max_repeats=30):
    fn()  # warm-up: workspace allocation, tf.function tracing
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (len(times) < max_repeats and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def value_error(got, cpu, bound):
    """|got - cpu.value| in units of the rounding it may carry (> 1: a mismatch)."""
    if cpu.degenerate:
        return 0.0 if got == 0 else float("inf")
    allowed = (
        4 * TOL * (bound.numerator + abs(cpu.value) * bound.denominator) / abs(cpu.denominator)
    )
    return abs(got - cpu.value) / (allowed + 1e-300)


def terms_error(result, cpu, bound):
    return max(
        abs(result.numerator - cpu.numerator) / (TOL * bound.numerator + 1e-300),
        abs(result.denominator - cpu.denominator) / (TOL * bound.denominator + 1e-300),
        value_error(result.value, cpu, bound),
    )


def load_tf():
    try:
        import tensorflow as tf
    except ImportError:
        return None, "TensorFlow not installed"
    if not tf.config.list_physical_devices("GPU"):
        return None, "TensorFlow sees no GPU"
    from ncap.tf.ingraph import beta_in_graph

    return (tf, tf.function(lambda z, s, g: beta_in_graph(z, s, g))), ""


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--quick", action="store_true", help="the first two traces only")
    args = parser.parse_args(argv)

    core_cuda = _cuda.cuda_module()
    if core_cuda.device_count() == 0:
        print("no CUDA device is visible: nothing to measure", file=sys.stderr)
        return 1
    tf_parts, tf_note = load_tf()
    devices = core_cuda.device_count()
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); CUDA devices: {devices}")
    if tf_note:
        print(f"TF columns skipped: {tf_note}")
    header = (
        f"{'trace':>12} {'widths':>26} {'B':>5} {'cpu ms':>9} {'cuda ms':>9} {'cuda(tf)':>9} "
        f"{'tf ms':>9} {'cpu/cuda':>9} {'tf/cuda':>8} {'check':>6}"
    )
    print(header)
    rows, mismatches = [], 0
    for name, widths, batch in TRACES[: 2 if args.quick else None]:
        host = probe_trace(widths, batch, seed=batch)
        cpu = ncap.beff(*host)
        bound = ncap.beff(*[[np.abs(a) for a in part] for part in host])
        device = [[core_cuda.DeviceArray(a) for a in part] for part in host]
        row = {"trace": name, "widths": list(widths), "batch": batch}
        errors = {"cuda": terms_error(ncap.beff(*device), cpu, bound)}
        row["cpu_ms"] = median_ms(lambda host=host: ncap.beff(*host))
        row["cuda_ms"] = median_ms(lambda device=device: ncap.beff(*device))
        row["cuda_tf_ms"] = row["tf_ms"] = None
        if tf_parts:
            tf, beta_tf = tf_parts
            with tf.device("/GPU:0"):
                tensors = [[tf.constant(a) for a in part] for part in host]
            errors["cuda(tf)"] = terms_error(ncap.beff(*tensors), cpu, bound)
            errors["tf"] = value_error(float(beta_tf(*tensors)), cpu, bound)
            row["cuda_tf_ms"] = median_ms(lambda t=tensors: ncap.beff(*t))
            row["tf_ms"] = median_ms(lambda t=tensors, f=beta_tf: float(f(*t)))
        row["errors"] = errors
        row["ok"] = all(e <= 1.0 for e in errors.values())
        mismatches += not row["ok"]
        rows.append(row)

        def ms(v):
            return f"{v:9.3f}" if v is not None else f"{'-':>9}"

        tf_ratio = f"{row['tf_ms'] / row['cuda_ms']:8.2f}" if row["tf_ms"] else f"{'-':>8}"
        print(
            f"{name:>12} {'-'.join(map(str, widths)):>26} {batch:>5} {ms(row['cpu_ms'])} "
            f"{ms(row['cuda_ms'])} {ms(row['cuda_tf_ms'])} {ms(row['tf_ms'])} "
            f"{row['cpu_ms'] / row['cuda_ms']:9.2f} {tf_ratio} {'ok' if row['ok'] else 'FAIL':>6}",
            flush=True,
        )
        if not row["ok"]:
            print(f"  mismatch against the CPU kernel (in units of allowed rounding): {errors}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "rows": rows}, indent=2))
    if mismatches:
        print(f"{mismatches} trace(s) disagree with the CPU kernel", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
