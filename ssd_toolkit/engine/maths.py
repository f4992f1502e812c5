"""The per-sample SSD maths, written once for NumPy arrays and torch tensors.

Every Python path computes the estimator here: the float64 NumPy reference, the torch
backend, the JAX and array-API paths, the Fig. 6 ablations, ``terms.py`` and the
gradient-norm diagnostics. Each caller passes its library's operations down as ``xp``
(``engine.array_ops``; a framework backend's ``ops_for(x)``): nothing here looks a library
up. The C++ and CUDA kernels implement the same rules (``csrc/``); ``COLLINEAR_RTOL2`` is
the constant they share (a test reads it from the C++ source).

Inputs are ``[B, N]`` rows already in the accumulation dtype (float64, or float32 where
a device lacks float64). The four per-sample sums of one reading pass are
``hh = ||h||^2``, ``cc = ||c||^2``, ``cn = <c, n>``, ``nn = ||n||^2`` with ``c`` =
eps_cond, ``n`` = noise, ``h`` = eps_cond - eps_uncond. The mode-seeking direction of a
variant is ``d = c - r n``:

- ``"ssd"``: ``r = <c, n> / ||n||^2`` (Eq. 6; 0 where ``||n|| = 0``);
- ``"no-vr"``: ``r = 0`` (Fig. 6, without variance reduction);
- ``"sds-vr"``: ``r = 1`` (Fig. 6, SDS's ``- eps``);
- ``"no-rescale"``: as ``"ssd"``, but ``d`` is used as it is (scale 1).

``||d||^2 = ||c||^2 - r (2 <c, n> - r ||n||^2)``, for ``"ssd"`` ``||c||^2 - r <c, n>``:
never the square of ``<c, n>``, so float64 data at any scale whose sums of squares are
finite (|x| up to ~1e150) give a scale-equivariant result. One degeneracy rule for the
rescaled variants: ``||d||^2 <= COLLINEAR_RTOL2 ||c||^2`` means ``d`` is rounding noise,
so ``scale = 0`` and ``E_b = 0``. A non-finite sum in a ``t_b <= M`` sample makes the
whole ``E_b`` NaN; a ``t_b > M`` sample is ``h_b`` (IEEE arithmetic).
"""

from __future__ import annotations

import math
import warnings

# ||d||^2 <= COLLINEAR_RTOL2 * ||c||^2 (||d|| <= 1e-6 ||c||): the direction is rounding
# noise. Shared with the C++/CUDA kernels (csrc/; tests/core/test_estimate_properties.py checks).
COLLINEAR_RTOL2 = 1e-12

VARIANTS = ("ssd", "no-vr", "sds-vr", "no-rescale")
STAT_NAMES = ("r", "h_norm", "eps_tilde_norm", "eps_cond_norm", "noise_norm", "scale")
NUM_STATS = len(STAT_NAMES)  # rows of a stats array ([NUM_STATS, B], STAT_NAMES order)
HUGE_INT = 1e300  # fast paths leave Python ints beyond this to the general path (float() could overflow)


def fast_number(x):
    """A scalar of the branch rule (``M``, a scalar ``t``) as a float when it is a finite Python
    float or a moderate int, else None: the fast paths' one check (anything else takes the
    general path, whose validation names what is wrong)."""
    kind = type(x)
    if kind is float:
        return x if math.isfinite(x) else None
    if kind is int and -HUGE_INT < x < HUGE_INT:
        return float(x)
    return None


def stats_dict(rows, mode_seeking):
    """The stats of one pass by name, assembled here for every backend: ``rows`` is
    ``[6, B]`` (``STAT_NAMES`` order) in any library, ``mode_seeking`` the bool ``[B]`` mask
    in the same library."""
    stats = {name: rows[i, ...] for i, name in enumerate(STAT_NAMES)}
    stats["mode_seeking"] = mode_seeking
    return stats


def per_sample_sums(xp, c, u, n):
    """``(hh, cc, cn, nn)``: the four per-sample sums of ``[B, N]`` rows, each ``[B]``."""
    with xp.errstate():
        h = c - u
        return xp.row_sum(h * h), xp.row_sum(c * c), *projection_sums(xp, c, n)


def projection_sums(xp, c, n):
    """``(cn, nn)``: ``<c, n>`` and ``||n||^2`` per sample, the two sums behind ``r``."""
    with xp.errstate():
        return xp.row_sum(c * n), xp.row_sum(n * n)


def projection_ratio(xp, cn, nn):
    """``r = <c, n> / ||n||^2`` per sample (Eq. 6); 0 where ``||n|| = 0``."""
    with xp.errstate():
        has_noise = nn > 0
        return xp.where(has_noise, cn / xp.where(has_noise, nn, 1.0), 0.0)


def coefficients(xp, variant, hh, cc, cn, nn):
    """``(r, d2, scale)`` per sample: the direction ``c - r n``, its squared norm and its factor.

    ``scale`` is ``||h|| / ||d||`` (0 for a degenerate ``d``) for the rescaled variants and
    1 for ``"no-rescale"``. ``d2`` is clamped at 0 (NaN stays NaN).
    """
    with xp.errstate():
        if variant == "ssd" or variant == "no-rescale":
            r = projection_ratio(xp, cn, nn)
            d2 = cc - r * cn
        elif variant == "no-vr":
            r = xp.full_like(cc, 0.0)
            d2 = cc
        elif variant == "sds-vr":
            r = xp.full_like(cc, 1.0)
            d2 = cc - (2.0 * cn - nn)
        else:
            raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
        d2 = xp.where(d2 < 0, 0.0, d2)  # rounding below 0; NaN compares False and stays
        if variant == "no-rescale":
            return r, d2, xp.full_like(d2, 1.0)
        degenerate = d2 <= COLLINEAR_RTOL2 * cc
        scale = xp.where(degenerate, 0.0, xp.sqrt(hh) / xp.sqrt(xp.where(degenerate, 1.0, d2)))
    return r, d2, scale


def apply(xp, c, u, n, r, scale, sums, mode_seeking):
    """``E`` rows: ``scale_b (c_b - r_b n_b)`` where ``mode_seeking_b``, else ``h_b``.

    A non-finite sum in a mode-seeking sample makes its whole row NaN.
    """
    hh, cc, cn, nn = sums
    with xp.errstate():
        finite = xp.isfinite(hh) & xp.isfinite(cc) & xp.isfinite(cn) & xp.isfinite(nn)
        factor = xp.where(finite, scale, float("nan"))
        rescaled = factor[:, None] * (c - r[:, None] * n)
        return xp.where(mode_seeking[:, None], rescaled, c - u)


def estimate_rows(xp, c, u, n, mode_seeking, variant="ssd"):
    """The estimator of ``variant`` on accumulation-dtype ``[B, N]`` rows.

    Args:
        xp: the rows' array operations (``engine.array_ops``).
        c, u, n: eps_cond, eps_uncond, noise rows (float64, or the accumulation dtype).
        mode_seeking: bool ``[B]`` (``t_b <= M``), same library and device as the rows.
        variant: one of ``VARIANTS``.

    Returns:
        ``(E, stats)``: E in the rows' dtype; stats maps ``STAT_NAMES`` to ``[B]`` vectors
        (``eps_tilde_norm`` is ``||d||``) and ``mode_seeking`` to the mask.
    """
    sums = per_sample_sums(xp, c, u, n)
    hh, cc, cn, nn = sums
    r, d2, scale = coefficients(xp, variant, *sums)
    E = apply(xp, c, u, n, r, scale, sums, mode_seeking)
    stats = {
        "r": r,
        "h_norm": xp.sqrt(hh),
        "eps_tilde_norm": xp.sqrt(d2),
        "eps_cond_norm": xp.sqrt(cc),
        "noise_norm": xp.sqrt(nn),
        "scale": scale,
        "mode_seeking": mode_seeking,
    }
    return E, stats


def gradient_norm(xp, h_norm, scale, mode_seeking, eps_tilde_norm=None):
    """``||E_b||`` from the stats, without a pass over the data.

    ``t_b > M``: ``||h_b||``. ``t_b <= M``: for the rescaled variants ``||h_b||`` (0 for a
    degenerate sample, ``scale_b = 0``); for ``"no-rescale"`` (pass ``eps_tilde_norm``)
    ``||d_b||``.
    """
    seeking = xp.where(scale == 0, 0.0, h_norm) if eps_tilde_norm is None else eps_tilde_norm
    return xp.where(mode_seeking, seeking, h_norm)


class TimestepConventionWarning(UserWarning):
    """``t`` and ``M`` of ``estimate`` that look like two different conventions."""


def warn_if_conventions_differ(t, M, stacklevel):
    """Warns when host timesteps ``t`` (a float, or a ``[B]`` NumPy array or CPU tensor) and
    ``M`` look like different conventions, each of which silently sends every sample down one
    branch of ``t <= M``: normalised t in [0, 1), not all integers (continuous-time and flow
    models), with a step-count M >= 1; a fractional M in (0, 1) (like threestudio's step percents) with integer
    steps t >= 1; negative t. The common case costs a list and a min() over B values."""
    values = [t] if isinstance(t, float) else t.tolist()  # batch-sized: Python beats a reduction call
    if not values:
        return
    lo = min(values)
    if lo >= 1 and not 0 < M < 1 or 0 <= lo and M >= 1 and values[0] >= 1:  # the common cases: nothing to say
        return
    hi, whole = max(values), all(v == int(v) for v in values)
    if lo < 0:
        message = f"t: expected timesteps >= 0, got min {float(lo):g}; a negative t is below every threshold M"
    elif M >= 1 and hi < 1 and not whole:
        message = (f"t: every timestep is in [0, 1) while M={M:g} >= 1, so every sample takes the mode-seeking "
                   "branch (t <= M); normalised t? pass t in M's units (e.g. t * 1000) or M as a fraction")
    elif 0 < M < 1 and lo >= 1 and whole:
        message = (f"M: {M:g} is a fraction while every t is an integer step >= 1, so every sample takes h (t > M); "
                   f"pass M in t's units (e.g. M={M * 1000:g} for 1000 steps)")
    else:
        return
    warnings.warn(message, TimestepConventionWarning, stacklevel=stacklevel + 1)
