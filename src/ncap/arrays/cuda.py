"""Loading the optional CUDA module, with an error that says how to get it.

The CUDA path (``ncap._core_cuda``) takes DLPack tensors that live on a GPU
without a copy. Each call runs on ncap's own stream of that GPU, ordered after
the producer's work through DLPack's stream handshake (``__dlpack__(stream=)``);
a producer that refuses the handshake (``tf.Tensor`` does) gets a device-wide
wait instead. The caller's current device is restored, and the working memory
stays allocated between calls (:func:`release_cuda_memory` frees it).
"""

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


def release_cuda_memory() -> None:
    """Free the GPU memory ncap keeps between calls (it is allocated again when needed).

    Does nothing on a build without the CUDA module.
    """
    if cuda_available():
        cuda_module().release_workspaces()
