"""Objects that expose only ``__dlpack__`` (no array API, no known library).

They are read through ``np.from_dlpack`` (zero-copy, host memory only) and computed as
NumPy arrays; the result is a NumPy array, since a bare DLPack producer gives no way to
build its own type.
"""

from __future__ import annotations

import numpy as np

from .base import ArrayBackend

_DLPACK_CPU = 1  # kDLCPU


class DLPackOnly(ArrayBackend):
    name = "dlpack"

    def claims(self, kind):
        return hasattr(kind, "__dlpack__") and hasattr(kind, "__dlpack_device__")

    def estimate(self, eps_cond, eps_uncond, noise, t, M, return_stats, backend):
        from .registry import framework_of  # noqa: PLC0415

        arrays = []
        for name, x in zip(("eps_cond", "eps_uncond", "noise"), (eps_cond, eps_uncond, noise)):
            if not hasattr(x, "__dlpack__"):
                raise TypeError(f"{name}: expected a __dlpack__ array like eps_cond, got {type(x).__name__}")
            device = x.__dlpack_device__()[0]
            if device != _DLPACK_CPU:
                raise TypeError(
                    f"{name}: expected a host (CPU) __dlpack__ array, got DLPack device type {device}; "
                    "pass a torch, CuPy or JAX array for device data"
                )
            arrays.append(np.from_dlpack(x))
        return framework_of(arrays[0]).estimate(*arrays, t, M, return_stats, backend)
