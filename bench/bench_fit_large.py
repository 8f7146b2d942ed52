"""fit with vs without BetaEff on a larger backbone: keras.applications.MobileNetV2
(weights=None, 32x32x3 inputs, alpha 1.0) + the default probe, batch 64.

    python bench/bench_fit_large.py [--rounds 7] [--steps 10]

Times one epoch of ``steps`` batches per round, plain and with ``ncap.keras.BetaEff``
recording every step, interleaved round after round (both models start from the same
weights and are traced before timing), and prints the median and minimum ratio.
Inputs are random images: only the time is measured here.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
import numpy as np
from bench_tf import _interleaved  # noqa: E402

import ncap
from ncap.keras import BetaEff  # noqa: E402


def build(seed: int = 0):
    keras.utils.set_random_seed(seed)
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), weights=None, include_top=False, pooling="avg"
    )
    model = ncap.attach_probe(backbone, 10, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(64 * args.steps, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, len(x))
    plain, recorded = build(), build()
    recorded.set_weights(plain.get_weights())
    cb = BetaEff()
    runs = {
        "plain": lambda: plain.fit(x, y, batch_size=64, epochs=1, verbose=0),
        "callback": lambda: recorded.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[cb]),
    }
    for run in runs.values():  # trace
        run()
    med, times = _interleaved(runs, args.rounds)
    assert len(cb.step_values) == args.steps and np.all(np.isfinite(cb.step_values))
    low = {k: min(v) for k, v in times.items()}
    print(
        f"MobileNetV2 32x32, {args.steps} steps of 64, {args.rounds} rounds interleaved: "
        f"median plain {med['plain']:.3f} s, with BetaEff {med['callback']:.3f} s, ratio "
        f"{med['callback'] / med['plain']:.3f}; min {low['plain']:.3f} s vs "
        f"{low['callback']:.3f} s, ratio {low['callback'] / low['plain']:.3f}"
    )


if __name__ == "__main__":
    main()
