"""Print the core benchmarks as a table with ratios to the kernel, from one pytest-benchmark JSON.

Usage: python bench/summarize.py /tmp/core.json [--stat min|median|mean]

Each group (one trace) holds every implementation timed in the same run on the
same inputs; a ratio is (that implementation's time) / (the kernel's time).
"GFMA/s" is the numerator's multiply-adds (dense count, see bench_core.py)
divided by the one-thread kernel's time, and "% peak" that rate over the
machine's one-thread float64 multiply-add peak measured in the same run
(bench_peak.py). Above 100% means the kernel skipped zeros (ReLU, dropout).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

IMPLS = ["kernel", "kernel_1thread", "numpy", "tf"]


def load(path: str, stat: str) -> tuple[dict, dict, dict]:
    with open(path) as fh:
        data = json.load(fh)
    groups: dict = defaultdict(dict)
    info: dict = {}
    for bench in data["benchmarks"]:
        extra = bench.get("extra_info", {})
        impl = extra.get("impl", bench["name"])
        groups[bench["group"]][impl] = bench["stats"][stat]
        if impl.startswith("kernel") or bench["group"] not in info:
            info[bench["group"]] = {**info.get(bench["group"], {}), **extra}
    return groups, info, {"machine": data.get("machine_info", {}), "datetime": data.get("datetime")}


def _ms(t: float | None) -> str:
    return f"{t * 1e3:.3f}" if t is not None else "-"


def table(groups: dict, info: dict, stat: str) -> str:
    head = (
        f"| trace | widths | B | kernel {stat} (ms) | 1 thread (ms) | NumPy (ms) | TF (ms) "
        "| NumPy / kernel | TF / kernel | numerator GFMA/s (1 thread) | % of 1-thread peak |"
    )
    rows = [head, "|" + "---|" * 11]
    for name, times in groups.items():
        if not any(i in times for i in IMPLS):
            continue
        extra = info.get(name, {})
        k = times.get("kernel")

        def ratio(i: str, times: dict = times, k: float | None = k) -> str:
            return f"{times[i] / k:.1f}x" if i in times and k else "-"

        rate = peak = "-"
        one = times.get("kernel_1thread")
        if one and extra.get("numerator_fmas"):
            gfma = extra["numerator_fmas"] / one / 1e9
            rate = f"{gfma:.1f}"
            if extra.get("peak_fmas_1thread"):
                peak = f"{100 * gfma * 1e9 / extra['peak_fmas_1thread']:.0f}%"
        rows.append(
            f"| {name} | {extra.get('widths', '?')} | {extra.get('batch', '?')} | "
            + " | ".join(_ms(times.get(i)) for i in IMPLS)
            + f" | {ratio('numpy')} | {ratio('tf')} | {rate} | {peak} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json")
    parser.add_argument("--stat", default="min", choices=["min", "median", "mean"])
    args = parser.parse_args()
    groups, info, run = load(args.json, args.stat)
    machine = run["machine"]
    any_extra = next((e for e in info.values() if e.get("peak_fmas_1thread")), {})
    print(
        f"# {run['datetime']}  {machine.get('cpu', {}).get('brand_raw', '')}  "
        f"python {machine.get('python_version', '')}  kernels: {any_extra.get('isa', '?')}"
    )
    if any_extra:
        print(
            f"# float64 multiply-add peak: {any_extra['peak_fmas_1thread'] / 1e9:.1f} G/s on one "
            f"thread, {any_extra['peak_fmas_all'] / 1e9:.1f} G/s on {any_extra['threads_all']}"
        )
    print(table(groups, info, args.stat))


if __name__ == "__main__":
    main()
