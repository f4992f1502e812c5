"""Timesteps, validated in one place: ``t`` of ``estimate`` and ``t`` that index a schedule.

``host_timesteps`` is the one validator of ``estimate``'s ``t`` (any library, a scalar or a
``[B]`` vector, real and finite); ``fast_timesteps`` takes the common forms with the least
work and returns None for anything it does not take (``host_timesteps`` then names the
error). Device timesteps (torch CUDA, CuPy, JAX under ``jit``) stay on their device; their
backends use ``check_shape`` and ``check_kind`` so the messages are the same everywhere.
"""

from __future__ import annotations

import math

import numpy as np

from ..engine.maths import HUGE_INT
from .registry import find, framework_of, is_refused

_F64 = np.dtype("float64")
_F32 = np.dtype("float32")
_INT_T = tuple(np.dtype(name) for name in ("int64", "int32", "uint8", "int16", "uint16", "uint32", "uint64", "int8"))


def check_kind(dtype_name: str) -> None:
    """Raises TypeError unless ``dtype_name`` is an int or float dtype."""
    if not (dtype_name.startswith(("int", "uint", "float", "bfloat"))):
        raise TypeError(f"t: expected real timesteps (ints or floats), got dtype {dtype_name}")


def check_shape(shape, B: int) -> None:
    """Raises ValueError unless ``shape`` is ``()`` or ``(B,)``."""
    shape = tuple(shape)
    if shape not in ((), (B,)):
        raise ValueError(f"t: expected a scalar or a vector of length B={B}, got shape {list(shape)}")


def _as_host(t, what):
    """``t`` as a NumPy array; arrays of any supported library are read through their backend."""
    if type(t) is not np.ndarray and is_refused(t):
        framework_of(t, "t")  # masked arrays and the like: their own message
    if isinstance(t, (np.ndarray, int, float, list, tuple, np.generic)):
        return np.asarray(t)
    framework = find(t)
    if framework is None:
        try:
            return np.asarray(t)
        except Exception:  # noqa: BLE001 - an object NumPy cannot read
            raise TypeError(f"t: expected {what}, got {type(t).__name__}") from None
    check_kind(framework.dtype_name(t))
    return framework.to_host_float64(t)


def host_timesteps(t, B: int) -> np.ndarray:
    """``t`` as a float64 host array of shape ``[B]`` (a scalar is broadcast).

    Raises:
        TypeError: non-real or non-numeric ``t`` (complex, bool, strings).
        ValueError: a vector of the wrong length or non-finite entries.
    """
    arr = _as_host(t, f"a scalar or a length-{B} vector of timesteps")
    if arr.dtype == object:
        if any(v is None for v in arr.flat):  # (float(None) would pass as NaN)
            raise TypeError("t: expected real timesteps (ints or floats), got None")
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"t: expected real timesteps (ints or floats), got {type(t).__name__}") from None
        except OverflowError:  # a Python int beyond float64's range
            raise ValueError("t: expected finite timesteps, got an integer beyond float64's range") from None
    check_kind(arr.dtype.name)
    check_shape(arr.shape, B)
    arr = np.full(B, float(arr), dtype=np.float64) if arr.ndim == 0 else arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"t: expected finite timesteps, got t[{bad}]={arr[bad]}")
    return arr


def fast_timesteps(t, B: int):
    """The common forms of ``t`` as a C-contiguous float64 host ``[B]`` array, or None.

    Takes a Python or NumPy int/float scalar, a native NumPy int/float ``[B]`` vector and a
    plain torch CPU ``[B]`` tensor, with the least work; None for anything else.
    """
    kind = type(t)
    if kind is np.ndarray:
        if t.shape != (B,):
            return None
        dt = t.dtype
        if dt is _F64 or dt is _F32:
            # t . t is finite only if every t_b is (an overflow merely takes the general path).
            if not math.isfinite(t.dot(t)):
                return None
            return t if dt is _F64 and t.flags.c_contiguous else t.astype(_F64)
        return t.astype(_F64) if dt in _INT_T else None
    if kind is int:
        return np.full(B, float(t)) if -HUGE_INT < t < HUGE_INT else None
    if kind is float or kind is np.float64 or kind is np.int64:
        return np.full(B, t, _F64) if math.isfinite(t) else None
    framework = find(t)
    host = None if framework is None else framework.host_vector(t)
    return None if host is None else fast_timesteps(host, B)


def timestep_indices(t, T: int) -> np.ndarray:
    """``t`` as an int64 host array (same shape), checked to be integers in ``[0, T - 1]``:
    the one validator of timesteps that index a schedule (weightings, ``NoiseSchedule``)."""
    try:
        host = _as_host(t, "integer timesteps")
    except TypeError as exc:
        raise TypeError(str(exc).replace("real timesteps (ints or floats)", "integer timesteps")) from None
    if host.dtype.kind not in "iuf":
        raise TypeError(f"t: expected integer timesteps, got dtype {host.dtype}")
    host = host.astype(np.float64)
    integral = np.isfinite(host) & (host == np.round(host))
    if host.size and not np.all(integral):
        raise ValueError(f"t: expected integer-valued timesteps, got {host[~integral].ravel()[0]}")
    idx = host.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= T):
        raise ValueError(f"t: expected timesteps in [0, {T - 1}], got min {idx.min()} max {idx.max()}")
    return idx

