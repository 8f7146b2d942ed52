"""Seed a candidate's Keras run so that nothing else in the process can change it.

``keras.utils.set_random_seed`` seeds Python's global ``random``, and Keras draws
every default seed (initialisers and dropout layers built with ``seed=None``)
from it. That generator is shared by every thread: a Dask worker's event loop
draws from it too (connection retries back off by ``random.uniform``), so a
draw made there while a candidate is built changes the candidate's initial
weights. :func:`seeded` gives Keras a generator of its own for the duration,
seeded the same way, so an undisturbed run's numbers stay what they were.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def seeded(seed: int) -> Iterator[Callable[[], None]]:
    """``keras.utils.set_random_seed(seed)``, with Keras' default seeds drawn from a
    private ``random.Random(seed)`` until the block ends.

    Yields ``reseed()``, which seeds everything again (as a second
    ``set_random_seed`` would). One block at a time per process: a worker runs
    one candidate at a time.
    """
    import keras
    from keras.src.random import seed_generator  # private: where make_default_seed draws

    shared = getattr(seed_generator, "python_random", None)

    def reseed() -> None:
        keras.utils.set_random_seed(seed)
        if shared is not None:  # else a Keras that draws elsewhere: the global seed is all
            seed_generator.python_random = random.Random(seed)

    reseed()
    try:
        yield reseed
    finally:
        if shared is not None:
            seed_generator.python_random = shared
