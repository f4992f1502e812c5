"""The branch of each sample on the JAX routes, decided exactly as NumPy decides it.

The reference compares ``float64(t_b) <= M`` in float64. A JAX ``t`` keeps its own dtype
(float32 or int32 with x64 off), a float comparison there would round ``M`` to that dtype,
and XLA's CPU threads read subnormals as zero (DAZ). So each dtype gets a threshold
computed once on the host, in that dtype, and the comparison runs on integers:

- floats (float16, bfloat16, float32, float64): ``t <= M`` iff ``t <= m`` where ``m`` is
  the largest value of ``t``'s dtype that is ``<= M`` (``t`` is one of those values);
  ``t`` and ``m`` are compared as order-preserving integer keys of their bit patterns.
- integers: ``float64(t) <= M`` iff ``t <= k`` where ``k`` is the largest integer of
  ``t``'s dtype whose float64 is ``<= M`` (rounding to float64 is monotonic), compared
  as integers of ``t``'s dtype.

The result is a uint8 code per sample, the one decision the kernel, the ``jax.numpy``
maths and ``stats["mode_seeking"]`` all use: ``H`` (t > M), ``SEEKING`` (t <= M) or
``INVALID`` (a non-finite ``t`` inside the computation, where no error can be raised:
that sample's result and stats are NaN).
"""

from __future__ import annotations

import functools
import math

import numpy as np

H, SEEKING, INVALID = 0, 1, 2

# bits of the float dtypes: (width, exponent mask) - the magnitude mask is 2**(width-1) - 1
_FLOAT_BITS = {"float16": (16, 0x7C00), "bfloat16": (16, 0x7F80), "float32": (32, 0x7F800000),
               "float64": (64, 0x7FF0000000000000)}
_INT_NAMES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def _float_dtype(name):
    if name == "bfloat16":
        import ml_dtypes  # noqa: PLC0415 - a dependency of jax

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _key_of_bits(bits, width):
    magnitude = bits & ((1 << (width - 1)) - 1)
    return -magnitude if bits >> (width - 1) else magnitude


def _value_of_key(key, name):
    width = _FLOAT_BITS[name][0]
    bits = key if key >= 0 else (1 << (width - 1)) | -key
    return float(np.array(bits, dtype=f"uint{width}").view(_float_dtype(name)))


@functools.lru_cache(maxsize=256)
def float_threshold_key(name: str, M: float) -> int:
    """The integer key of the largest ``name`` value ``<= M`` (finite ``M``); may be the
    key of -inf (no finite value qualifies)."""
    width, exponent = _FLOAT_BITS[name]
    with np.errstate(over="ignore"):
        nearest = np.array(M, dtype=np.float64).astype(_float_dtype(name))  # inf beyond the range
    key = _key_of_bits(int(nearest.view(f"uint{width}")), width)
    while _value_of_key(key, name) > M:
        key -= 1
    while key < exponent and _value_of_key(key + 1, name) <= M:  # never past +inf's key
        key += 1
    return key


@functools.lru_cache(maxsize=256)
def int_threshold(name: str, M: float):
    """``True`` (every value of the dtype is ``<= M``), ``False`` (none is) or the largest
    integer ``k`` of the dtype with ``float(k) <= M``."""
    info = np.iinfo(name)
    if float(info.max) <= M:
        return True
    if float(info.min) > M:
        return False
    lo, hi = int(info.min), int(info.max)  # float(lo) <= M < float(hi)
    guess = min(max(math.floor(M), lo), hi - 1)
    if float(guess) <= M < float(guess + 1):
        return guess
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if float(mid) <= M else (lo, mid)
    return lo


def branch_codes(jax, t, M: float, B: int):
    """uint8 ``[B]`` codes for a JAX ``t`` (scalar or ``[B]``, any int or float dtype),
    traceable; no float arithmetic touches ``t``."""
    jnp = jax.numpy
    name = np.dtype(t.dtype).name
    if name not in _FLOAT_BITS and name not in _INT_NAMES:  # float8, int4, ...: widened exactly
        t = t.astype(jnp.float32 if jnp.issubdtype(t.dtype, jnp.floating) else jnp.int32)
        name = np.dtype(t.dtype).name
    t = jnp.broadcast_to(t, (B,))
    if name in _FLOAT_BITS:
        width, exponent = _FLOAT_BITS[name]
        signed = f"int{width}"
        bits = jax.lax.bitcast_convert_type(t, signed)
        magnitude = bits & np.array((1 << (width - 1)) - 1, signed)
        key = jnp.where(bits < 0, -magnitude, magnitude)
        seeking = key <= np.array(float_threshold_key(name, M), signed)
        return jnp.where(magnitude < np.array(exponent, signed), seeking.astype(jnp.uint8), np.uint8(INVALID))
    k = int_threshold(name, M)
    if isinstance(k, bool):
        return jnp.full((B,), SEEKING if k else H, jnp.uint8)
    return (t <= np.array(k, name)).astype(jnp.uint8)


def host_codes(t64: np.ndarray, M: float) -> np.ndarray:
    """uint8 codes for validated (finite) float64 host timesteps."""
    return (t64 <= M).astype(np.uint8)
