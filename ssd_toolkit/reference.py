"""Plain NumPy implementation of the SSD estimator (Algorithm 1), written for clarity.

This is the oracle every compiled kernel is tested against, and the fallback backend
when no compiled module is present. All arithmetic is done in float64.

Semantics (shared by every backend, see docs/api.md "Edge cases"):
  * samples are the rows of a ``[B, N]`` view; every norm and inner product is per row;
  * ``t_b > M``  -> ``E_b = h_b = eps_cond_b - eps_uncond_b`` (elementwise, exact);
  * ``t_b <= M`` -> ``E_b = (||h_b|| / ||eps_tilde_b||) * eps_tilde_b`` with
    ``eps_tilde_b = eps_cond_b - r_b * noise_b`` and
    ``r_b = <eps_cond_b, noise_b> / ||noise_b||^2``;
  * ``||noise_b|| = 0``: ``r_b = 0`` (the projection on a zero vector is zero);
  * degenerate ``eps_tilde_b`` (``||eps_tilde_b||^2 <= COLLINEAR_RTOL2 * ||eps_cond_b||^2``,
    eps_cond collinear with the noise, or eps_cond = 0): its direction is rounding noise,
    so ``E_b = 0`` and ``scale_b = 0``;
  * a non-finite sum in a ``t_b <= M`` sample makes the whole ``E_b`` NaN; in a ``t_b > M``
    sample ``E_b = h_b`` carries the non-finite elements by IEEE arithmetic. Other samples
    are never affected.
"""

from __future__ import annotations

import numpy as np

# ||eps_tilde||^2 <= COLLINEAR_RTOL2 * ||eps_cond||^2 (i.e. ||eps_tilde|| <= 1e-6 ||eps_cond||)
# marks eps_cond as collinear with the noise. Kept in sync with csrc/ssd_core.h.
COLLINEAR_RTOL2 = 1e-12

STAT_NAMES = ("r", "h_norm", "eps_tilde_norm", "eps_cond_norm", "noise_norm", "scale")


def per_sample_sums(eps_cond, eps_uncond, noise):
    """The four per-sample sums of the one reading sweep, in float64.

    Args:
        eps_cond, eps_uncond, noise: arrays of shape ``[B, N]``.

    Returns:
        ``(hh, cc, cn, nn)``: ``||h||^2``, ``||eps_cond||^2``, ``<eps_cond, noise>``,
        ``||noise||^2``, each of shape ``[B]``.
    """
    c = np.asarray(eps_cond, dtype=np.float64)
    u = np.asarray(eps_uncond, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64)
    h = c - u
    with np.errstate(over="ignore", invalid="ignore"):
        return (h * h).sum(1), (c * c).sum(1), (c * n).sum(1), (n * n).sum(1)


def coefficients(hh, cc, cn, nn):
    """Per-sample ``r``, ``||eps_tilde||`` and the rescaling factor from the four sums.

    ``||eps_tilde||^2 = ||c||^2 - <c, n>^2 / ||n||^2`` (clamped at 0; the cancellation is
    harmless in float64 down to the collinearity threshold).
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        safe_nn = np.where(nn > 0, nn, 1.0)
        r = np.where(nn > 0, cn / safe_nn, 0.0)
        et2 = np.where(nn > 0, cc - cn * cn / safe_nn, cc)
        et2 = np.where(et2 > 0, et2, np.where(np.isnan(et2), et2, 0.0))
        degenerate = et2 <= COLLINEAR_RTOL2 * cc
        scale = np.where(degenerate, 0.0, np.sqrt(hh) / np.sqrt(np.where(degenerate, 1.0, et2)))
    return r, np.sqrt(et2), scale


def estimate_reference(eps_cond, eps_uncond, noise, t, M):
    """SSD estimator on ``[B, N]`` float arrays; returns ``(E float64 [B, N], stats)``.

    Args:
        eps_cond, eps_uncond, noise: arrays of shape ``[B, N]`` (any float dtype).
        t: float64 array of shape ``[B]``.
        M: float threshold.

    Returns:
        ``E`` in float64 and a dict of float64 ``[B]`` arrays named by ``STAT_NAMES`` plus
        ``mode_seeking`` (bool ``[B]``, True where ``t_b <= M``).
    """
    c = np.asarray(eps_cond, dtype=np.float64)
    u = np.asarray(eps_uncond, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    hh, cc, cn, nn = per_sample_sums(c, u, n)
    r, et_norm, scale = coefficients(hh, cc, cn, nn)
    mode_seeking = t <= M

    with np.errstate(over="ignore", invalid="ignore"):
        h = c - u
        eps_tilde = c - r[:, None] * n
        rescaled = scale[:, None] * eps_tilde
    sums_finite = np.isfinite(hh) & np.isfinite(cc) & np.isfinite(cn) & np.isfinite(nn)
    rescaled[~sums_finite] = np.nan
    E = np.where(mode_seeking[:, None], rescaled, h)

    stats = {
        "r": r,
        "h_norm": np.sqrt(hh),
        "eps_tilde_norm": et_norm,
        "eps_cond_norm": np.sqrt(cc),
        "noise_norm": np.sqrt(nn),
        "scale": scale,
        "mode_seeking": mode_seeking,
    }
    return E, stats
