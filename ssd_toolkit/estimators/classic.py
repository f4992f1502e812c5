"""The estimators SSD is compared with: SDS (with its CFG conventions), mode-seeking alone,
CSD and NFSD. Each validates the branches it reads and computes half precision in float32."""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from .base import finish, prepare_branches, up, where_rows

CFG_CONVENTIONS = ("standard", "threestudio")


@dataclass(frozen=True)
class SDS:
    """SDS with classifier-free guidance scale ``guidance_scale``.

    ``cfg="standard"``: ``eps_u + s (eps_c - eps_u)`` (DreamFusion, DreamWaltz, diffusers);
    ``cfg="threestudio"``: ``eps_c + s (eps_c - eps_u)`` (an effective scale s + 1).
    Result ``eps_cfg - noise``; ``variance_reduction=False`` drops ``- noise`` (SJC-style).
    """

    guidance_scale: float = 100.0
    cfg: str = "standard"
    variance_reduction: bool = True
    name = "sds"
    branches = ("cond", "uncond")

    def __post_init__(self):
        checks.cfg_scale("guidance_scale", self.guidance_scale)
        if self.cfg not in CFG_CONVENTIONS:
            raise ValueError(f"cfg: expected one of {CFG_CONVENTIONS}, got {self.cfg!r}")

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, _, _ = prepare_branches(eps_cond, eps_uncond, noise, t)
        c, u = up(eps_cond), up(eps_uncond)
        eps_cfg = (u if self.cfg == "standard" else c) + self.guidance_scale * (c - u)
        E = eps_cfg - up(noise) if self.variance_reduction else eps_cfg
        return finish(E, batch.dtype, batch.B, return_stats)


@dataclass(frozen=True)
class ModeSeeking:
    """The mode-seeking term alone: ``eps_cond`` (``eps_cond - noise`` with variance reduction)."""

    variance_reduction: bool = False
    name = "mode-seeking"
    branches = ("cond",)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, _, _ = prepare_branches(eps_cond, None, noise, t, needs=("cond",))
        c = up(eps_cond)
        E = c - up(noise) if self.variance_reduction else c + 0
        return finish(E, batch.dtype, batch.B, return_stats)


@dataclass(frozen=True)
class CSD:
    """Classifier score distillation: the mode-disengaging term alone, ``scale (eps_c - eps_u)``."""

    scale: float = 1.0
    name = "csd"
    branches = ("cond", "uncond")

    def __post_init__(self):
        checks.real("scale", self.scale)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, _, _ = prepare_branches(eps_cond, eps_uncond, noise, t)
        E = self.scale * (up(eps_cond) - up(eps_uncond))
        return finish(E, batch.dtype, batch.B, return_stats)


@dataclass(frozen=True)
class NFSD:
    """Noise-free score distillation: ``delta_D + s delta_C``, per sample.

    ``delta_C = eps_c - eps_u``; ``delta_D = eps_u`` where ``t_b < t_threshold``, else
    ``eps_u - eps_neg`` (the negative-prompt branch). No ``- noise`` term.
    Defaults: ``guidance_scale=7.5``, ``t_threshold=200`` (the NFSD paper's).
    """

    guidance_scale: float = 7.5
    t_threshold: float = 200.0
    name = "nfsd"
    branches = ("cond", "uncond", "negative")

    def __post_init__(self):
        checks.cfg_scale("guidance_scale", self.guidance_scale)
        checks.real("t_threshold", self.t_threshold)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, t_vec, neg = prepare_branches(eps_cond, eps_uncond, noise, t, eps_negative, needs=self.branches)
        c, u = up(eps_cond), up(eps_uncond)
        delta_d = where_rows(t_vec < self.t_threshold, u, u - up(neg))
        E = delta_d + self.guidance_scale * (c - u)
        return finish(E, batch.dtype, batch.B, return_stats)
