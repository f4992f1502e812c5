"""Modes of a (diffused) Gaussian mixture, found by gradient ascent on the exact log density."""

from __future__ import annotations

import numpy as np


def climb(mixture, x0, alpha=1.0, sigma=0.0, mask=None, tol=1e-10, max_iters=20000):
    """Gradient ascent on ``log p_t`` from each start point to the mode it climbs to.

    The step is the smallest diffused component variance (``alpha^2 v_min + sigma^2``), the
    mean-shift step for one isotropic component, which converges without overshoot.

    Args:
        mixture: a ``GaussianMixture``.
        x0: ``[N, d]`` start points.
        alpha, sigma: scalars, the diffusion level.
        mask: optional ``[K]`` booleans, the conditional components.
        tol: stop when no point moves more than this in one step.

    Returns:
        ``[N, d]`` the local maxima reached.
    """
    x = np.array(x0, dtype=np.float64, ndmin=2)
    step = alpha**2 * float(np.min(mixture.variances)) + sigma**2
    for _ in range(max_iters):
        move = step * mixture.score(x, alpha, sigma, mask)
        x = x + move
        if np.max(np.abs(move)) < tol:
            break
    return x


def find_modes(mixture, alpha=1.0, sigma=0.0, mask=None, merge_tol=1e-4):
    """The distinct modes reached from every (diffused) component mean in the mixture.

    Args:
        mixture: a ``GaussianMixture``.
        alpha, sigma: scalars, the diffusion level.
        mask: optional ``[K]`` booleans: the conditional mixture (starts from its means only).
        merge_tol: points closer than this are one mode.

    Returns:
        ``[n_modes, d]``, sorted lexicographically.
    """
    means = mixture.means if mask is None else mixture.means[np.asarray(mask, dtype=bool)]
    ends = climb(mixture, alpha * means, alpha, sigma, mask)
    modes = []
    for p in ends:
        if all(np.linalg.norm(p - q) > merge_tol for q in modes):
            modes.append(p)
    modes = np.array(modes)
    return modes[np.lexsort(modes.T[::-1])]


def is_mode_consistent(mixture, mask, tol=1e-3):
    """The mode-consistency hypothesis (Sec. 4.1): every conditional mode is within ``tol``
    of an unconditional mode. Returns ``(holds, cond_modes, uncond_modes)``."""
    cond = find_modes(mixture, mask=mask)
    uncond = find_modes(mixture)
    holds = all(np.min(np.linalg.norm(uncond - c, axis=1)) < tol for c in cond)
    return holds, cond, uncond
