"""Loading the optional CUDA module, with an error that says how to get it."""

from __future__ import annotations

from types import ModuleType


def cuda_available() -> bool:
    """True when ncap was built with its CUDA module (a GPU may still be absent)."""
    try:
        from .. import _core_cuda  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_module() -> ModuleType:
    try:
        from .. import _core_cuda
    except ImportError as err:
        raise RuntimeError(
            "the arrays live on a CUDA device, but this ncap was built without its CUDA module "
            f"({err}). Rebuild with nvcc on PATH: `NCAP_CUDA=ON pip install --no-binary ncap .` "
            "(or move the arrays to the host, e.g. tensor.cpu() / tensor.numpy())."
        ) from None
    return _core_cuda
