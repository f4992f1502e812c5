"""What every array backend provides; the defaults suit host (CPU) libraries.

A backend is a stateless object: ``claims(type)`` says whether it takes arrays of that
type; the rest converts between the caller's arrays and what the kernels and
``_ssd_math`` read, and rebuilds the caller's type on the way out.
"""

from __future__ import annotations

import numpy as np

from .batch import prepare
from .timestep_checks import host_timesteps


class ArrayBackend:
    name = ""
    refuses = False
    ops = None  # the array operations engine.maths needs (engine/array_ops.py)

    def claims(self, kind) -> bool:
        raise NotImplementedError

    def ops_for(self, x):
        """The operations for ``x`` (one namespace per backend, except the array-API one)."""
        return self.ops

    # -- validation hooks (batch.py) ---------------------------------------------------
    def checked(self, x, name):
        """``x`` as the kernels read it (e.g. native byte order), or a TypeError."""
        return x

    def dtype_name(self, x) -> str:
        return np.dtype(x.dtype).name

    def device(self, x) -> str:
        return "cpu"

    def host_timesteps(self, batch) -> bool:
        """Whether ``prepare`` validates ``t`` on the host (False: the backend keeps it
        where it is, e.g. on a device or inside a trace)."""
        return batch.device == "cpu"

    def warn_if_differentiated(self, batch) -> None:
        """Warns when the inputs carry gradients (the result never does)."""

    def timestep_vector(self, t, B, like):
        """``t`` validated on the host, as a float64 ``[B]`` vector beside ``like``."""
        return self.from_host(host_timesteps(t, B), like)

    def host_vector(self, t):
        """``t`` as a NumPy vector without a copy when that is free, else None."""
        return None

    # -- estimate ------------------------------------------------------------------------
    def estimate(self, eps_cond, eps_uncond, noise, t, M, return_stats, backend):
        """``ssd_toolkit.estimate`` for this library's arrays (fast paths go first here; the
        call depth to the user's frame is the same in every backend, for warnings)."""
        return self.run(prepare(eps_cond, eps_uncond, noise, t, M), backend, return_stats)

    def run(self, batch, backend, return_stats):
        raise NotImplementedError

    # -- conversions ---------------------------------------------------------------------
    def flat_rows(self, x, B, N):
        return self.ops.lib.reshape(x, (B, N))

    def astype(self, x, dtype):
        return x.astype(dtype)

    def reshape(self, x, shape):
        return self.ops.lib.reshape(x, shape)

    def to_host_float64(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def from_host(self, values, like, dtype=None):
        raise NotImplementedError
