"""Print the core benchmarks as a table with ratios to the kernel, from one pytest-benchmark JSON.

Usage: python bench/summarize.py bench/core.json [--stat min|median]

Each group (one trace) holds every implementation timed in the same run on the
same inputs; a ratio is (that implementation's time) / (the kernel's time).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def load(path: str, stat: str) -> tuple[dict, dict]:
    with open(path) as fh:
        data = json.load(fh)
    groups: dict = defaultdict(dict)
    info: dict = {}
    for bench in data["benchmarks"]:
        extra = bench.get("extra_info", {})
        impl = extra.get("impl", bench["name"])
        groups[bench["group"]][impl] = bench["stats"][stat]
        info[bench["group"]] = (extra.get("widths", "?"), extra.get("batch", "?"))
    return groups, {
        "machine": data.get("machine_info", {}),
        "datetime": data.get("datetime"),
        **info,
    }


def table(groups: dict, info: dict, stat: str) -> str:
    impls = ["kernel", "kernel_1thread", "numpy", "tf"]
    head = (
        f"| trace | widths | B | kernel {stat} (ms) | 1 thread (ms) | NumPy (ms) | TF (ms) "
        "| NumPy / kernel | TF / kernel |"
    )
    rows = [head, "|" + "---|" * 9]
    for name, times in groups.items():
        widths, batch = info[name]
        ms = [f"{times[i] * 1e3:.3f}" if i in times else "-" for i in impls]
        k = times.get("kernel")

        def ratio(i: str, times: dict = times, k: float | None = k) -> str:
            return f"{times[i] / k:.1f}x" if i in times and k else "-"

        rows.append(
            f"| {name} | {widths} | {batch} | "
            + " | ".join(ms)
            + f" | {ratio('numpy')} | {ratio('tf')} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json")
    parser.add_argument("--stat", default="min", choices=["min", "median", "mean"])
    args = parser.parse_args()
    groups, info = load(args.json, args.stat)
    machine = info.get("machine", {})
    print(
        f"# {info.get('datetime')}  {machine.get('cpu', {}).get('brand_raw', '')}  "
        f"python {machine.get('python_version', '')}"
    )
    print(table(groups, info, args.stat))


if __name__ == "__main__":
    main()
