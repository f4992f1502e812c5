"""SSD (Algorithm 1, through ``ssd_toolkit.estimate`` and the fused kernels) and its Fig. 6
ablations (the shared float64 maths, ``engine.maths``, with one design choice changed)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks, frameworks
from ..core import BACKENDS, estimate
from ..engine import maths
from .base import down, prepare_branches


@dataclass(frozen=True)
class SSD:
    """Stable Score Distillation (Algorithm 1) with threshold ``M``; the fused kernel.

    ``t_b > M``: ``h_b = eps_cond_b - eps_uncond_b``; ``t_b <= M``:
    ``(||h_b|| / ||eps_tilde_b||) eps_tilde_b`` with ``eps_tilde = eps_cond - r noise``.
    ``backend`` is passed to ``ssd_toolkit.estimate``.
    """

    M: float = 200.0
    backend: str = "auto"
    name = "ssd"
    branches = ("cond", "uncond")

    def __post_init__(self):
        checks.threshold(self.M)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {self.backend!r}")

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        if not return_stats:
            return estimate(eps_cond, eps_uncond, noise, t, self.M, backend=self.backend)
        E, stats = estimate(eps_cond, eps_uncond, noise, t, self.M, return_stats=True, backend=self.backend)
        xp = frameworks.namespace(stats["h_norm"])
        stats["grad_norm"] = maths.gradient_norm(xp, stats["h_norm"], stats["scale"], stats["mode_seeking"])
        return E, stats


@dataclass(frozen=True)
class SSDAblation:
    """SSD with one design choice changed (Fig. 6); a float64 path, not the fused kernel.

    ``t_b > M`` gives ``h_b``; ``t_b <= M`` gives the variant's direction ``c - r n``,
    rescaled to ``||h_b||`` unless the variant is ``"no-rescale"``, by the same maths and
    the same degeneracy rule as ``estimate`` (``ssd_toolkit.engine.maths``). The inputs are
    copied to float64 (on their device) for the duration of the call.
    """

    M: float = 200.0
    branches = ("cond", "uncond")
    variant = "ssd"

    def __post_init__(self):
        checks.threshold(self.M)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, t_vec, _ = prepare_branches(eps_cond, eps_uncond, noise, t)
        B, N = batch.B, batch.N
        c, u, n = (frameworks.astype(frameworks.flat_rows(x, B, N), "float64") for x in batch.arrays)
        seeking = t_vec <= float(self.M)
        xp = frameworks.namespace(c)
        E, stats = maths.estimate_rows(xp, c, u, n, seeking, self.variant)
        out = down(E.reshape(batch.shape), batch.dtype)
        if not return_stats:
            return out
        unscaled = stats["eps_tilde_norm"] if self.variant == "no-rescale" else None
        stats["grad_norm"] = maths.gradient_norm(xp, stats["h_norm"], stats["scale"], seeking, unscaled)
        return out, stats


@dataclass(frozen=True)
class SSDNoVarianceReduction(SSDAblation):
    """Fig. 6 "w/o variance reduction": ``eps_cond`` instead of ``eps_tilde``, still rescaled."""

    name = "ssd-no-vr"
    variant = "no-vr"


@dataclass(frozen=True)
class SSDSDSNoiseTerm(SSDAblation):
    """Fig. 6 with SDS's variance reduction: ``eps_cond - noise`` instead of ``eps_cond - r noise``
    (``r`` reported as 1), still rescaled."""

    name = "ssd-sds-vr"
    variant = "sds-vr"


@dataclass(frozen=True)
class SSDNoRescale(SSDAblation):
    """Fig. 6 "w/o rescaling": ``eps_tilde`` itself for ``t_b <= M`` (``scale`` reported as 1)."""

    name = "ssd-no-rescale"
    variant = "no-rescale"
