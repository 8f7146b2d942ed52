"""Type stubs for ncap._core_cuda, the optional CUDA module (cuda/bindings/bindings_cuda.cpp).

Private: ``ncap.beff`` / ``ncap.degrees`` dispatch here for arrays that live on a
CUDA device. Inputs are DLPack producers (``__dlpack__`` and ``__dlpack_device__``)
holding float16, bfloat16, float32 or float64 2-D tensors on one GPU; results come back as
host values and NumPy arrays, as from ``ncap._core``.
"""

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

DEGENERATE_RTOL: float
MIN_BETA_LAYERS: int
MIN_DEGREE_LAYERS: int
#: True for the development build against the host emulation of the CUDA runtime.
emulated: bool

def beff(
    acts: Sequence[Any],
    derivs: Sequence[Any],
    grads: Sequence[Any],
    per_sample: bool,
    threads: int = 0,
    strategy: Literal["auto", "gram", "rows"] = "auto",
) -> dict[str, Any]: ...
def degrees(
    acts: Sequence[Any], derivs: Sequence[Any], grads: Sequence[Any], threads: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]: ...
def device_count() -> int: ...
def current_device() -> int: ...
def _set_current_device(device: int) -> None: ...
def workspace_bytes(
    widths: Sequence[int],
    batch: int,
    work: Literal["batch", "sample", "degrees"] = "batch",
    strategy: Literal["auto", "gram", "rows"] = "auto",
) -> int: ...
def numerator_strategies(widths: Sequence[int], batch: int) -> list[str]: ...
def cached_workspace_bytes(device: int = 0) -> int: ...
def release_workspaces() -> None: ...
def _fail_next_allocations(count: int) -> None: ...
def _call_counts() -> dict[str, int]: ...
def _last_error() -> int: ...

class DeviceArray:
    """A host array copied to GPU memory and exported through DLPack (a test producer)."""

    def __init__(
        self,
        host: np.ndarray,
        device: int = 0,
        *,
        host_memory: bool = False,
        pad_bytes: int = 0,
        offset_in_pointer: bool = False,
        stream_handshake: bool = True,
        dlpack_device: int = -1,
    ) -> None: ...
    def __dlpack__(
        self,
        *,
        stream: int | None = None,
        max_version: tuple[int, int] | None = None,
        dl_device: Any = None,
        copy: bool | None = None,
    ) -> Any: ...
    def __dlpack_device__(self) -> tuple[int, int]: ...
    def overwrite_later(self, values: np.ndarray, delay_ms: float) -> None: ...
    @property
    def exports(self) -> int: ...
    @property
    def releases(self) -> int: ...
    @property
    def requested_streams(self) -> list[int | None]: ...
