"""Array libraries: which one an input belongs to, and everything that differs between them.

One backend per library (NumPy, torch, CUDA-array-interface producers, JAX, any other
array-API library), found from the input's type by ``framework_of`` (``registry.py``).
Nothing outside this package asks which library an array comes from: the rest of the
toolkit calls the helpers below, which ask the input's backend.
"""

from __future__ import annotations

from .batch import ARRAY_ARGS, FLOAT_DTYPES, Batch, prepare, stats_dict, validate_arrays
from . import detectors, registry
from .registry import find, framework_of
from .timestep_checks import fast_timesteps, host_timesteps, timestep_indices

registry.DETECTORS[:] = detectors.DETECTORS  # the backends, known to the registry without it importing them

__all__ = [
    "ARRAY_ARGS",
    "FLOAT_DTYPES",
    "Batch",
    "find",
    "astype",
    "dtype_name",
    "fast_timesteps",
    "flat_rows",
    "framework_of",
    "from_host",
    "host_timesteps",
    "namespace",
    "prepare",
    "reshape",
    "row_norms",
    "stats_dict",
    "timestep_indices",
    "timestep_vector",
    "to_host_float64",
    "validate_arrays",
]


def dtype_name(x) -> str:
    """Canonical dtype name of an array ('float32', 'bfloat16', 'int64', ...)."""
    return framework_of(x).dtype_name(x)


def flat_rows(x, B: int, N: int):
    """A C-contiguous ``[B, N]`` view of ``x`` in its own library (a copy only if needed)."""
    return framework_of(x).flat_rows(x, B, N)


def astype(x, dtype: str):
    """``x`` as ``dtype`` (a name), same library and device (no copy when it already is)."""
    return framework_of(x).astype(x, dtype)


def reshape(x, shape):
    """``x`` reshaped, same library."""
    return framework_of(x).reshape(x, shape)


def to_host_float64(x):
    """A float64 NumPy copy of ``x`` (host memory)."""
    return framework_of(x).to_host_float64(x)


def from_host(values, like, dtype=None):
    """Host NumPy ``values`` in ``like``'s library and device (``dtype`` a name, default
    the values' own)."""
    return framework_of(like).from_host(values, like, dtype)


def timestep_vector(t, B: int, like):
    """``t`` (a scalar or ``[B]``, checked as ``estimate`` checks it) as a float64 ``[B]`` vector
    in ``like``'s library and device (traced values stay traced: torch.compile, torch.func)."""
    return framework_of(like).timestep_vector(t, B, like)


def namespace(x):
    """The array operations ``engine.maths`` needs (its ``xp``), for ``x``'s library."""
    return framework_of(x).ops_for(x)


def row_norms(y, B: int | None = None):
    """float64 ``[B]`` L2 norms of the samples of ``y`` (``[B, ...]``), in y's library."""
    framework = framework_of(y)
    B = int(y.shape[0]) if B is None else B
    N = 1
    for d in y.shape[1:]:
        N *= int(d)
    rows = framework.astype(framework.flat_rows(y, B, N), "float64")
    ops = framework.ops_for(rows)
    return ops.sqrt(ops.row_sum(rows * rows))
