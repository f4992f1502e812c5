"""Plain NumPy implementation of the SSD estimator (Algorithm 1), written for clarity.

This is the oracle every compiled kernel is tested against, and the fallback backend
when no compiled module is present. All arithmetic is done in float64, by the maths
shared with every Python backend (``engine.maths``).

Semantics (shared by every backend, see docs/api.md "Edge cases"):
  * samples are the rows of a ``[B, N]`` view; every norm and inner product is per row;
  * ``t_b > M``  -> ``E_b = h_b = eps_cond_b - eps_uncond_b`` (elementwise, exact);
  * ``t_b <= M`` -> ``E_b = (||h_b|| / ||eps_tilde_b||) * eps_tilde_b`` with
    ``eps_tilde_b = eps_cond_b - r_b * noise_b`` and
    ``r_b = <eps_cond_b, noise_b> / ||noise_b||^2``;
  * ``||noise_b|| = 0``: ``r_b = 0`` (the projection on a zero vector is zero);
  * degenerate ``eps_tilde_b`` (``||eps_tilde_b||^2 <= COLLINEAR_RTOL2 * ||eps_cond_b||^2``,
    eps_cond collinear with the noise, or eps_cond = 0): its direction is rounding noise,
    so ``E_b = 0`` and ``scale_b = 0``; ``||eps_tilde_b||^2`` is formed as
    ``||eps_cond_b||^2 - r_b <eps_cond_b, noise_b>`` (no square of the inner product);
  * a non-finite sum in a ``t_b <= M`` sample makes the whole ``E_b`` NaN; in a ``t_b > M``
    sample ``E_b = h_b`` carries the non-finite elements by IEEE arithmetic. Other samples
    are never affected.
"""

from __future__ import annotations

import numpy as np

from .array_ops import NUMPY_OPS
from .maths import COLLINEAR_RTOL2, STAT_NAMES, estimate_rows

__all__ = ["COLLINEAR_RTOL2", "STAT_NAMES", "estimate_reference"]


def estimate_reference(eps_cond, eps_uncond, noise, t, M):
    """SSD estimator on ``[B, N]`` float arrays; returns ``(E float64 [B, N], stats)``.

    Args:
        eps_cond, eps_uncond, noise: arrays of shape ``[B, N]`` (any float dtype and byte
            order; converted to native float64).
        t: timesteps, shape ``[B]``.
        M: float threshold.

    Returns:
        ``E`` in float64 and a dict of float64 ``[B]`` arrays named by ``STAT_NAMES`` plus
        ``mode_seeking`` (bool ``[B]``, True where ``t_b <= M``).
    """
    c, u, n = (np.asarray(x, dtype=np.float64) for x in (eps_cond, eps_uncond, noise))
    return estimate_rows(NUMPY_OPS, c, u, n, np.asarray(t, dtype=np.float64) <= M)
