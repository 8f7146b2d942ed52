"""Turning user arrays into something the compiled core can read, or a clear error.

Everything the core cannot read directly is handled here, in plain sight:
float16 is widened to float32, unaligned or byte-swapped arrays are copied,
and anything that is not a real floating array is refused with a TypeError.
Strided and non-contiguous arrays are passed as they are: the core reads
them through their strides without a copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .spec import MIN_BETA_LAYERS, shallow_probe_error

# DLPack device types (dlpack.h) whose memory is on a GPU: 2 = CUDA, 13 = CUDA managed.
_DL_CUDA = (2, 13)


_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # native byte order only


def is_cuda_array(x: Any) -> bool:
    """True when ``x`` is a DLPack producer that lives on a CUDA device."""
    if type(x) is np.ndarray:
        return False
    dev = getattr(x, "__dlpack_device__", None)
    if dev is None:
        return False
    try:
        kind = int(dev()[0])
    except Exception:  # a producer that cannot say where it lives is treated as host memory
        return False
    return kind in _DL_CUDA


def _not_float_error(name: str, dtype_name: str, *, complex_: bool, integral: bool) -> TypeError:
    """The one message for a non-float dtype, whether NumPy's or a tensor library's."""
    if complex_:
        return TypeError(f"{name}: complex dtype {dtype_name} is not supported (beta_eff is real)")
    if integral:
        return TypeError(
            f"{name}: expected a float32 or float64 array, got {dtype_name}; "
            "activations, derivatives and gradients are real numbers, cast them explicitly"
        )
    return TypeError(f"{name}: expected a float32 or float64 array, got dtype {dtype_name}")


def refuse_foreign_non_float(x: Any, name: str) -> None:
    """Refuse a tensor whose own dtype says it is not floating, before touching its data.

    TensorFlow aborts the process when a string, resource or variant tensor is
    exported through DLPack, so the dtype is read first: ``tf.DType.is_floating``
    and ``torch.dtype.is_floating_point`` (NumPy dtypes are checked later).
    """
    if type(x) is np.ndarray:
        return
    dtype = getattr(x, "dtype", None)
    floating = getattr(dtype, "is_floating", None)
    if floating is None:
        floating = getattr(dtype, "is_floating_point", None)
    if not isinstance(floating, bool) or floating:
        return
    raise _not_float_error(
        name,
        str(getattr(dtype, "name", dtype)),
        complex_=bool(getattr(dtype, "is_complex", False)),
        integral=bool(getattr(dtype, "is_integer", False) or getattr(dtype, "is_bool", False)),
    )


def is_ready_host_array(x: Any) -> bool:
    """True for what the core reads as it is: an aligned 2-D float32/float64 ndarray."""
    return type(x) is np.ndarray and x.ndim == 2 and x.dtype in _FAST_DTYPES and x.flags.aligned


def to_host_array(x: Any, name: str) -> np.ndarray:
    """A NumPy view of ``x`` (no copy where possible), checked to be a 2-D float array."""
    if is_ready_host_array(x):
        return x
    refuse_foreign_non_float(x, name)
    if isinstance(x, np.ndarray):
        arr = x
    elif hasattr(x, "__dlpack__") and not isinstance(x, (list, tuple)):
        try:
            arr = np.from_dlpack(x)  # zero-copy for host tensors (TensorFlow, PyTorch, JAX)
        except (BufferError, TypeError, RuntimeError, ValueError):
            arr = np.asarray(x)
    else:
        try:
            arr = np.asarray(x)
        except ValueError as err:  # ragged nested lists
            raise ValueError(f"{name}: could not be read as a 2-D array ({err})") from None
    return _checked_float_2d(arr, name)


def _checked_float_2d(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == object:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype=object (ragged?)")
    kind = arr.dtype.kind
    if arr.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 (TensorFlow, JAX): kind "V"
        arr = arr.astype(np.float32)  # widening is exact
        kind = "f"
    if kind != "f":
        raise _not_float_error(name, str(arr.dtype), complex_=kind == "c", integral=kind in "biu")
    if arr.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D array of shape (batch, width), "
            f"got {arr.ndim}-D shape {arr.shape}"
        )
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))  # byte-swapped: copy once
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)  # widening is exact
    elif arr.dtype not in _FAST_DTYPES:
        raise TypeError(f"{name}: expected float32 or float64, got {arr.dtype}")
    if not arr.flags.aligned:
        arr = arr.copy()  # the core reads whole floats; unaligned memory is copied first
    return arr


def as_layer_list(seq: Any, name: str) -> list[Any]:
    """Check that ``seq`` is a list/tuple of per-layer arrays (not one stacked array)."""
    if type(seq) is list or type(seq) is tuple:
        return list(seq)
    if isinstance(seq, np.ndarray) or hasattr(seq, "__dlpack__") or not isinstance(seq, Sequence):
        raise TypeError(
            f"{name}: expected a list of 2-D arrays, one per layer, got {type(seq).__name__}"
        )
    if isinstance(seq, (str, bytes)):
        raise TypeError(f"{name}: expected a list of 2-D arrays, got {type(seq).__name__}")
    return list(seq)


def check_layer_counts(acts: list, derivs: list, grads: list, min_layers: int) -> int:
    """Check the list lengths; returns L, the number of weight layers."""
    n_layers = len(acts)
    if n_layers == 0:
        raise ValueError(
            "acts: is empty; pass one array per weight layer (len(acts) == L >= 4 for beta)"
        )
    if len(grads) != n_layers:
        raise ValueError(
            f"grads: expected one array per weight layer, len(grads) == len(acts) == {n_layers}, "
            f"got {len(grads)}"
        )
    if len(derivs) != n_layers - 1:
        raise ValueError(
            f"derivs: expected len(acts) - 1 == {n_layers - 1} arrays (one between each pair of "
            f"weight layers), got {len(derivs)}"
        )
    if n_layers < min_layers:
        if min_layers == MIN_BETA_LAYERS:
            raise shallow_probe_error(
                n_layers,
                "acts",
                "add hidden layers to the probe (ncap's default is (256, 128, 64))",
            )
        raise ValueError(f"acts: need at least {min_layers} weight layers, got {n_layers}")
    return n_layers
