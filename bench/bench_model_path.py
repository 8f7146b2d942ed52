"""The model path: ``ncap.beff(model, x, y)`` end to end vs a training step and autodiff.

    python bench/bench_model_path.py [--rounds 15] [--profile]

The bench backbone of ``bench_tf.py`` (Conv2D 32-64-64 on scikit-learn's digits) + the
default probe (256, 128, 64) -> 10, B = 64, training mode. Times, interleaved round after
round on the same batch: ``model.train_on_batch``; the model's forward pass alone in a
``tf.function`` (what any capture must at least do, so it bounds the ratios below);
``ncap.capture``; ``ncap.beff`` with
the closed form (capture + kernel); ``ncap.beff(method="autodiff")`` compiled and eager
(the paper's path). Prints min and median of each and the ratios of the medians.
``--profile`` adds a cProfile listing of 50 closed-form calls.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_tf import _conv_probe_model, _digits, _interleaved  # noqa: E402

import ncap  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    x, y = _digits()
    xb, yb = x[:64], y[:64]
    model = _conv_probe_model()
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    kw = dict(training=True, seed=1)
    forward = tf.function(lambda a: model(a, training=True))
    fns = {
        "train_on_batch": lambda: model.train_on_batch(xb, yb),
        "forward": lambda: np.asarray(forward(xb)),
        "capture": lambda: ncap.capture(model, xb, yb, **kw),
        "closed_form": lambda: ncap.beff(model, xb, yb, **kw),
        "autodiff_compiled": lambda: ncap.beff(
            model, xb, yb, method="autodiff", compiled=True, **kw
        ),
        "autodiff_eager": lambda: ncap.beff(model, xb, yb, method="autodiff", **kw),
    }
    for fn in fns.values():  # trace and warm up
        fn()
        fn()
    med, times = _interleaved(fns, args.rounds)
    for k, v in times.items():
        print(f"{k:18s} min {min(v) * 1e3:7.2f} ms  median {med[k] * 1e3:7.2f} ms")
    c = med["closed_form"]
    print(f"closed_form / train_on_batch: {c / med['train_on_batch']:.2f}x")
    print(f"autodiff_compiled / closed_form: {med['autodiff_compiled'] / c:.1f}x")
    print(f"autodiff_eager / closed_form: {med['autodiff_eager'] / c:.1f}x")
    f = med["forward"]
    print(
        f"bounds from the forward pass alone: autodiff_compiled / forward "
        f"{med['autodiff_compiled'] / f:.1f}x, autodiff_eager / forward "
        f"{med['autodiff_eager'] / f:.1f}x, forward / train_on_batch "
        f"{f / med['train_on_batch']:.2f}x"
    )
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(50):
            fns["closed_form"]()
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
