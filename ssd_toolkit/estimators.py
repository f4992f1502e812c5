"""Score-distillation estimators behind one interface.

Every estimator is called as ``est(eps_cond, eps_uncond, noise, t, eps_negative=None)``
with ``[B, ...]`` arrays and per-sample ``t``, and returns the gradient with respect to
the clean input (the term that Eq. 3 multiplies by dx/dtheta), without w(t). Its
``branches`` attribute names the denoiser outputs it needs ("cond", "uncond",
"negative"), so a guidance module batches only those.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _arrays
from .core import estimate

CFG_CONVENTIONS = ("standard", "threestudio")


@dataclass(frozen=True)
class SSD:
    """Stable Score Distillation (Algorithm 1) with threshold ``M``; the fused kernel."""

    M: float = 200.0
    name = "ssd"
    branches = ("cond", "uncond")

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        return estimate(eps_cond, eps_uncond, noise, t, self.M, return_stats=return_stats)


@dataclass(frozen=True)
class SDS:
    """SDS with classifier-free guidance scale ``guidance_scale``.

    ``cfg="standard"``: ``eps_u + s (eps_c - eps_u)`` (DreamFusion, DreamWaltz, diffusers);
    ``cfg="threestudio"``: ``eps_c + s (eps_c - eps_u)`` (an effective scale s + 1).
    ``variance_reduction=False`` drops the ``- noise`` term (SJC-style).
    """

    guidance_scale: float = 100.0
    cfg: str = "standard"
    variance_reduction: bool = True
    name = "sds"
    branches = ("cond", "uncond")

    def __post_init__(self):
        if self.cfg not in CFG_CONVENTIONS:
            raise ValueError(f"cfg: expected one of {CFG_CONVENTIONS}, got {self.cfg!r}")

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None):
        _arrays.validate_arrays(eps_cond, eps_uncond, noise)
        base = eps_uncond if self.cfg == "standard" else eps_cond
        eps_cfg = base + self.guidance_scale * (eps_cond - eps_uncond)
        return eps_cfg - noise if self.variance_reduction else eps_cfg


@dataclass(frozen=True)
class ModeSeeking:
    """The mode-seeking term alone: ``eps_cond`` (optionally ``eps_cond - noise``)."""

    variance_reduction: bool = False
    name = "mode-seeking"
    branches = ("cond",)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None):
        _arrays.validate_arrays(eps_cond, eps_cond, noise)
        return eps_cond - noise if self.variance_reduction else eps_cond + 0


@dataclass(frozen=True)
class CSD:
    """Classifier score distillation: the mode-disengaging term ``h`` alone, times ``scale``."""

    scale: float = 1.0
    name = "csd"
    branches = ("cond", "uncond")

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None):
        _arrays.validate_arrays(eps_cond, eps_uncond, noise)
        return self.scale * (eps_cond - eps_uncond)


ESTIMATORS = {cls.name: cls for cls in (SSD, SDS, ModeSeeking, CSD)}


def list_estimators():
    """Names accepted by ``get_estimator``."""
    return sorted(ESTIMATORS)


def get_estimator(name, **params):
    """An estimator by name, e.g. ``get_estimator("ssd", M=200)``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
        TypeError: a parameter the estimator does not take.
    """
    key = name.lower().replace("_", "-")
    if key not in ESTIMATORS:
        raise ValueError(f"name: expected one of {list_estimators()}, got {name!r}")
    return ESTIMATORS[key](**params)
