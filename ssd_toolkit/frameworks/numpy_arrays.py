"""NumPy arrays (and ndarray subclasses that behave as arrays, e.g. ``np.memmap``).

The fast path takes three C-contiguous native arrays of one float dtype and shape
straight to the compiled CPU kernel (the arrays cross the boundary by the buffer
protocol); everything else goes through ``prepare`` and the host runner.
"""

from __future__ import annotations


import numpy as np

from ..engine import dispatch as _dispatch
from ..engine import extension as _extension
from ..engine.array_ops import NUMPY_OPS
from ..engine.maths import NUM_STATS, fast_number, warn_if_conventions_differ
from .base import ArrayBackend
from .batch import prepare, stats_dict
from .timestep_checks import fast_timesteps

# Native-byte-order float dtypes the fast path takes, by identity (no hashing).
_FAST_DTYPES = tuple((np.dtype(name), name) for name in ("float32", "float16", "float64"))


class NumpyArrays(ArrayBackend):
    name = "numpy"
    ops = NUMPY_OPS

    def claims(self, kind):
        return issubclass(kind, np.ndarray)

    def checked(self, x, name):
        return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))  # kernels read native order

    def dtype_name(self, x):
        return x.dtype.name

    def host_vector(self, t):
        return t

    def estimate(self, eps_cond, eps_uncond, noise, t, M, return_stats, backend):
        if backend == "auto" or backend == "compiled":
            result = _fast(eps_cond, eps_uncond, noise, t, M, return_stats)
            if result is not None:
                return result
        return self.run(prepare(eps_cond, eps_uncond, noise, t, M), backend, return_stats)

    def run(self, batch, backend, return_stats):
        return _dispatch.run_host(self, batch, backend, return_stats)

    # host runner hooks
    def flat_rows(self, x, B, N):
        return np.ascontiguousarray(x).reshape(B, N)

    def astype(self, x, dtype):
        return x.astype(dtype, copy=False)

    def reshape(self, x, shape):
        return x.reshape(shape)

    def host_view(self, rows):
        return rows, rows.dtype.name

    def empty_rows(self, like):
        return np.empty(like.shape, like.dtype)

    def from_host(self, values, like, dtype=None):
        return values if dtype is None else values.astype(dtype)


def _fast(eps_cond, eps_uncond, noise, t, M, return_stats):
    if type(eps_cond) is not np.ndarray or type(eps_uncond) is not np.ndarray or type(noise) is not np.ndarray:
        return None
    dt = eps_cond.dtype
    for fast_dtype, name in _FAST_DTYPES:
        if dt is fast_dtype:
            break
    else:
        return None
    shape = eps_cond.shape
    if (
        eps_uncond.dtype is not dt
        or noise.dtype is not dt
        or eps_uncond.shape != shape
        or noise.shape != shape
        or not shape
        or not (eps_cond.flags.c_contiguous and eps_uncond.flags.c_contiguous and noise.flags.c_contiguous)
    ):
        return None
    B = shape[0]
    size = eps_cond.size
    M = fast_number(M)
    if not B or size == B or M is None:  # empty batch, one-element samples (warned), bad M
        return None
    kernel = _extension.cpu_kernel()
    t64 = fast_timesteps(t, B)
    if kernel is None or t64 is None:
        return None
    warn_if_conventions_differ(t64, M, stacklevel=4)
    out = np.empty(shape, dt)
    if not return_stats:
        kernel(eps_cond, eps_uncond, noise, out, t64, None, B, size // B, name, M)
        return out
    stats = np.empty((NUM_STATS, B))
    kernel(eps_cond, eps_uncond, noise, out, t64, stats, B, size // B, name, M)
    return out, stats_dict(stats, t64 <= M)
