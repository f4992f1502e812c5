"""DreamWaltz's CFG-scale schedule (``guide.guidance_adjust``), used by every host.

As DreamWaltz's ``get_guidance_scale`` (``core/diffusion/controlnet.py``): the "uniform"
draw comes from NumPy's global generator, which DreamWaltz's trainer seeds, so one seed
gives the same scales as DreamWaltz's own guidance.
"""

from __future__ import annotations

import numpy as np

GUIDANCE_ADJUSTS = ("constant", "uniform", "linear", "linear_rev", "linear_reverse")  # DreamWaltz, DreamWaltz-G
MIN_GUIDANCE_SCALE = 7.5  # the lower end of DreamWaltz's adjusted scales


def check_guidance_adjust(guidance_adjust):
    if guidance_adjust not in GUIDANCE_ADJUSTS:
        raise ValueError(f"guide.guidance_adjust: expected one of {GUIDANCE_ADJUSTS}, got {guidance_adjust!r}")
    return guidance_adjust


def guidance_scale_at(guidance_adjust, guidance_scale, train_step, max_iteration):
    """DreamWaltz's ``get_guidance_scale``: "constant" ``s``; "uniform" ``U(7.5, s)`` (NumPy's
    global generator); "linear" ``s -> 7.5`` over the run; "linear_rev" (DreamWaltz-G: "linear_reverse") ``7.5 -> s``."""
    s = float(guidance_scale)
    check_guidance_adjust(guidance_adjust)
    if guidance_adjust == "constant":
        return s
    if guidance_adjust == "uniform":
        return float(np.random.uniform(MIN_GUIDANCE_SCALE, s))
    delta = (s - MIN_GUIDANCE_SCALE) / (max_iteration - 1) if max_iteration > 1 else 0.0
    if guidance_adjust == "linear":
        return s - (train_step - 1) * delta
    return MIN_GUIDANCE_SCALE + (train_step - 1) * delta
