"""CPU kernel vs CUDA kernel on the same large traces (run by bench/gpu_check.sh).

Prints one line per trace: median wall time of ncap.beff on host arrays and on
GPU arrays (DLPack, no copy), their ratio, and the relative difference.
"""

import statistics
import time

import numpy as np

import ncap
from ncap import _cuda


def trace(rng, widths, batch):
    L = len(widths) - 1
    acts = [
        np.maximum(rng.standard_normal((batch, widths[l])), 0).astype(np.float32) for l in range(L)
    ]
    derivs = [(rng.random((batch, widths[l + 1])) > 0.5).astype(np.float32) for l in range(L - 1)]
    grads = [rng.standard_normal((batch, widths[l + 1])).astype(np.float32) for l in range(L)]
    return acts, derivs, grads


def median_seconds(fn, repeats=20):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    core_cuda = _cuda.cuda_module()
    print(f"CUDA devices: {core_cuda.device_count()}")
    rng = np.random.default_rng(0)
    print(f"{'widths':>28} {'B':>6} {'cpu ms':>9} {'cuda ms':>9} {'cpu/cuda':>9} {'rel diff':>9}")
    for widths, batch in [
        ((2048, 256, 128, 64, 10), 64),
        ((2048, 256, 128, 64, 10), 1024),
        ((2048, 1024, 512, 256, 100), 4096),
    ]:
        host = trace(rng, widths, batch)
        device = [[core_cuda.DeviceArray(a) for a in part] for part in host]
        cpu = ncap.beff(*host)
        gpu = ncap.beff(*device)
        t_cpu = median_seconds(lambda host=host: ncap.beff(*host))
        t_gpu = median_seconds(lambda device=device: ncap.beff(*device))
        diff = abs(gpu.value - cpu.value) / max(abs(cpu.value), 1e-300)
        print(
            f"{str(widths):>28} {batch:>6} {t_cpu * 1e3:9.3f} {t_gpu * 1e3:9.3f} "
            f"{t_cpu / t_gpu:9.2f} {diff:9.1e}"
        )
    try:  # a real framework's CUDA tensors through DLPack, when PyTorch is there
        import torch

        host = trace(rng, (2048, 256, 128, 64, 10), 256)
        tensors = [[torch.from_numpy(a).cuda() for a in part] for part in host]
        r = ncap.beff(*tensors)
        print(
            f"torch CUDA tensors: device={r.device} value={r.value:.6g} "
            f"cpu={ncap.beff(*host).value:.6g}"
        )
    except ImportError:
        print("PyTorch not installed: skipped the torch.cuda DLPack check")


if __name__ == "__main__":
    main()
