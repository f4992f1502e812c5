"""Helpers shared by the estimators: validation of the branches an estimator reads, the
half-precision compute dtype, the result and its stats, argument checks."""

from __future__ import annotations

import numpy as np

from . import _arrays


def _prepare(eps_cond, eps_uncond, noise, t, eps_negative=None, needs=("cond", "uncond")):
    """Validate the branches an estimator reads and ``t``; returns (batch, t64, negative)."""
    ref = eps_cond
    batch = _arrays.validate_arrays(ref, eps_uncond if "uncond" in needs else ref, noise if noise is not None else ref)
    negative = None
    if "negative" in needs:
        if eps_negative is None:
            raise ValueError("eps_negative: expected the negative-prompt branch [B, ...] (this estimator needs it), got None")
        _arrays.validate_arrays(ref, ref, eps_negative)
        negative = eps_negative
    t64 = _arrays.validate_timesteps(t, batch.B)
    return batch, t64, negative


def _is_half(x):
    return _arrays.dtype_name(x) in ("float16", "bfloat16")


def _up(x):
    """x in its compute dtype: float32 for half inputs, itself otherwise."""
    if not _is_half(x):
        return x
    return x.float() if _arrays.is_torch_tensor(x) else x.astype(np.float32)


def _down(y, like):
    """y back in like's dtype."""
    if _arrays.is_torch_tensor(y):
        return y.to(like.dtype)
    return y.astype(like.dtype, copy=False)


def _where_rows(mask, a, b):
    """Per-sample select: ``a_b`` where ``mask_b`` else ``b_b``; mask is a host bool [B]."""
    shape = (mask.shape[0],) + (1,) * (len(a.shape) - 1)
    if _arrays.is_torch_tensor(a):
        m = _arrays.from_numpy_like(mask.reshape(shape), a, dtype=_arrays._torch().bool)
        return _arrays._torch().where(m, a, b)
    return np.where(mask.reshape(shape), a, b)


def _finish(E, like, B, return_stats, stats=None):
    out = _down(E, like)
    if not return_stats:
        return out
    stats = dict(stats or {})
    stats["grad_norm"] = _arrays.row_norms(E, B)
    return out, stats


def _check_real(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a finite real number, got {type(value).__name__} {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite real number, got {value}")


def _check_step(train_step, max_iteration):
    _check_real("train_step", train_step)
    if max_iteration is not None:
        _check_real("max_iteration", max_iteration)
        if max_iteration <= 0:
            raise ValueError(f"max_iteration: expected a positive number, got {max_iteration}")
