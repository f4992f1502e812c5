"""The estimators each toy experiment compares, built from ``ssd_toolkit``.

Everything is an ``ssd_toolkit.get_estimator`` object. Besides the paper's estimators the
toys run the ``ssd-no-rescale`` ablation: SSD without Algorithm 1's rescaling of the
variance-reduced term to ``||h||`` (line 15). The toys show why it is worth having: with
exact scores ``||h||`` vanishes at small t near the conditional modes, and the rescaled
term vanishes with it.
"""

from __future__ import annotations

import numpy as np

import ssd_toolkit


def unscaled_ssd(M):
    """The ablation: ``h`` for ``t > M``, ``eps_tilde = eps_cond - r noise`` (Eq. 7) for ``t <= M``."""
    return ssd_toolkit.get_estimator("ssd-no-rescale", M=M)


def ssd_label(M, scaled=True):
    """The label of SSD (or, ``scaled=False``, the unscaled ablation) at threshold ``M``."""
    return f"SSD M={M:g}" if scaled else f"SSD unscaled M={M:g}"


def fig7_estimators(M=200.0, cfg_scales=(7.5, 100.0), steps=None):
    """Fig. 7's estimators plus SDS at each CFG scale and the unscaled-SSD ablation; with the
    run's ``steps``, also ISM, annealed CSD and SDS-Bridge (the bridge's second stage from
    half-way; annealed CSD and the bridge read the negative / source branch)."""
    ests = {
        "mode-seeking": ssd_toolkit.get_estimator("mode-seeking"),
        "mode-disengaging (h)": ssd_toolkit.get_estimator("csd"),
    }
    for s in cfg_scales:
        ests[f"SDS CFG {s:g}"] = ssd_toolkit.get_estimator("sds", guidance_scale=s, cfg="standard")
    ests[ssd_label(M)] = ssd_toolkit.get_estimator("ssd", M=M)
    ests[ssd_label(M, scaled=False)] = unscaled_ssd(M)
    if steps is not None:
        ests["ISM"] = ssd_toolkit.get_estimator("ism")
        ests["CSD annealed"] = ssd_toolkit.get_estimator("csd-annealed")
        ests["SDS-Bridge"] = ssd_toolkit.get_estimator("sds-bridge", stage_two_start_step=steps // 2)
    return ests


def ssd_sweep_estimators(Ms):
    """SSD and its unscaled ablation at every threshold in ``Ms``."""
    ests = {ssd_label(M): ssd_toolkit.get_estimator("ssd", M=M) for M in Ms}
    ests.update({ssd_label(M, scaled=False): unscaled_ssd(M) for M in Ms})
    return ests


class PerRowThreshold:
    """An SSD-family estimator with one threshold per row, to sweep M along the batch.

    The SSD family reads t only through ``t_b <= M`` (``ssd_toolkit.estimate``), so
    ``base`` built with ``M = 0`` and called with ``t'_b = 0`` where ``t_b <= thresholds[b]``
    and ``t'_b = 1`` elsewhere gives row b exactly what the estimator built with
    ``M = thresholds[b]`` gives it (the comparison is NumPy's, exact), in one call for every
    threshold. (``t - thresholds`` would do the same but is negative, which ``estimate``
    warns about as a timestep convention.)

    Args:
        base: ``get_estimator("ssd", M=0)`` or an SSD ablation with ``M=0``.
        thresholds: ``[B]`` per-row thresholds.
    """

    branches = ("cond", "uncond")

    def __init__(self, base, thresholds):
        if getattr(base, "M", None) != 0:
            raise ValueError(f"base: expected an SSD-family estimator with M=0, got {base!r}")
        self.base, self.thresholds = base, np.asarray(thresholds, dtype=np.float64)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        above = (np.asarray(t, dtype=np.float64) > self.thresholds).astype(np.float64)  # 0: t <= M, 1: t > M
        return self.base(eps_cond, eps_uncond, noise, above, return_stats=return_stats)
