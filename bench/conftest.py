"""Benchmark settings: quiet TensorFlow; NumPy's BLAS on one thread.

On this trace size the kernel runs on one thread (below its parallel
threshold), so one BLAS thread makes the NumPy comparison like for like; an
OpenBLAS team on two shared cores otherwise spends most of its time waiting
(we saw 43 ms instead of 0.4 ms for the NumPy closed form under load).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
