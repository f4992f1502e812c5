"""Term-level API (Sec. 4): the pieces users combine into their own estimators.

All functions take ``[B, ...]`` arrays (NumPy or torch, same rules as ``estimate``) and
work per sample; per-sample scalars come back as float64 ``[B]`` arrays.
"""

from __future__ import annotations

import numpy as np

from . import frameworks
from .engine import maths


def _rows64(x, B):
    """float64 ``[B, N]`` rows in x's library and device (accumulation precision)."""
    return frameworks.astype(frameworks.flat_rows(x, B, int(np.prod(x.shape[1:]))), "float64")


def mode_disengaging(eps_cond, eps_uncond):
    """``h = eps_cond - eps_uncond`` (Alg. 1 line 7), in the inputs' dtype."""
    frameworks.validate_arrays(eps_cond, eps_uncond, eps_cond, names=("eps_cond", "eps_uncond", "eps_cond"))
    return eps_cond - eps_uncond


def projection_ratio(eps_cond, noise):
    """``r_b = <eps_cond_b, noise_b> / ||noise_b||^2`` (Eq. 6); 0 where ``||noise_b|| = 0``.

    Returns:
        float64 ``[B]`` in the inputs' library and device.
    """
    batch = frameworks.validate_arrays(eps_cond, eps_cond, noise)
    c, n = _rows64(eps_cond, batch.B), _rows64(noise, batch.B)
    xp = frameworks.namespace(c)
    cn, nn = maths.projection_sums(xp, c, n)
    return maths.projection_ratio(xp, cn, nn)


def variance_reduced(eps_cond, noise):
    """``eps_tilde = eps_cond - r * noise`` (Eq. 7), in the inputs' dtype and shape."""
    batch = frameworks.validate_arrays(eps_cond, eps_cond, noise)
    c, n = _rows64(eps_cond, batch.B), _rows64(noise, batch.B)
    xp = frameworks.namespace(c)
    cn, nn = maths.projection_sums(xp, c, n)
    out = (c - maths.projection_ratio(xp, cn, nn)[:, None] * n).reshape(batch.shape)
    return frameworks.astype(out, batch.dtype)


def optimal_coefficient(eps_hat, noise, assume_standard_noise=True):
    """Monte-Carlo estimate of the optimal variance-reduction coefficient ``c`` (Eq. 8).

    ``c = tr(Cov(eps_hat, eps)) / tr(Cov(eps))``, over K draws of the noise at one
    ``(x, t)``. With ``assume_standard_noise`` the denominator is ``d`` (eps ~ N(0, I), as
    in Eq. 8); otherwise the empirical trace.

    Args:
        eps_hat: ``[K, ...]`` noise predictions for K noises at the same (x, t).
        noise: ``[K, ...]`` the K noises.

    Returns:
        A Python float.
    """
    batch = frameworks.validate_arrays(eps_hat, eps_hat, noise, names=("eps_hat", "eps_hat", "noise"))
    if batch.B < 2:
        raise ValueError(f"eps_hat: expected K >= 2 Monte-Carlo draws along dim 0, got K={batch.B}")
    e = frameworks.to_host_float64(frameworks.flat_rows(eps_hat, batch.B, batch.N))
    n = frameworks.to_host_float64(frameworks.flat_rows(noise, batch.B, batch.N))
    e_c, n_c = e - e.mean(0), n - n.mean(0)
    cross = float((e_c * n_c).sum() / (batch.B - 1))
    denom = float(batch.N) if assume_standard_noise else float((n_c * n_c).sum() / (batch.B - 1))
    return cross / denom
