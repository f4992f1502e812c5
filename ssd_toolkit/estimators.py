"""Score-distillation estimators behind one interface.

Every estimator is called as ``est(eps_cond, eps_uncond, noise, t, eps_negative=None,
return_stats=False)`` and returns the gradient with respect to the clean input (the term
that Eq. 3 multiplies by dx/dtheta), without w(t).

- ``eps_cond``, ``eps_uncond``, ``noise`` (and ``eps_negative`` for NFSD, annealed CSD and
  SDS-Bridge's source prompt): ``[B, ...]``,
  one shape, float dtype, library (NumPy or PyTorch) and device, validated as in
  ``ssd_toolkit.estimate``. A branch the estimator does not declare may be passed as
  ``None`` or any array of the right shape; it is never read (``noise`` is still used
  for the shape check where it is a placeholder).
- ``t``: a scalar or a length-B vector; every estimator validates it, NFSD and the SSD
  family use it per sample.
- Result: eps_cond's shape, dtype, library and device. float16/bfloat16 inputs are
  computed in float32 and rounded once; the SSD family accumulates its per-sample
  reductions in float64.
- ``return_stats=True`` also returns a dict of float64 ``[B]`` arrays in the caller's
  library/device: always ``grad_norm`` (``||E_b||`` of the unrounded result); the SSD
  family adds ``r``, ``h_norm``, ``eps_tilde_norm`` (the norm of the direction it
  rescales), ``eps_cond_norm``, ``noise_norm``, ``scale`` and bool ``mode_seeking``.
  ``ssd_toolkit.diagnostics.step_diagnostics`` turns them into a logging dict.

``branches`` names the denoiser outputs an estimator reads ("cond", "uncond",
"negative"), so a guidance module batches only those; ``name`` is its registry key.
Estimators that change with training progress (``csd-annealed``, ``sds-bridge``) have
``at_step(train_step, max_iteration)``, which returns the estimator for that step
(``at_step(est, ...)`` below works for every estimator).
"""

from __future__ import annotations

from dataclasses import dataclass


from . import _ssd_math, checks, frameworks
from ._estimator_base import _down, _finish, _prepare, _up, _where_rows
from ._registry import lookup
from .core import BACKENDS, estimate
from .estimators_scheduled import ISM, SDS_BRIDGE_SOURCE_MODIFIER, AnnealedCSD, SDSBridge  # noqa: F401 - public here too

CFG_CONVENTIONS = ("standard", "threestudio")


# ------------------------------------------------------------------------- estimators


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
        checks.real("M", self.M, array_0d=True, noun="scalar")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {self.backend!r}")

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        if not return_stats:
            return estimate(eps_cond, eps_uncond, noise, t, self.M, backend=self.backend)
        E, stats = estimate(eps_cond, eps_uncond, noise, t, self.M, return_stats=True, backend=self.backend)
        stats["grad_norm"] = _ssd_math.gradient_norm(stats["h_norm"], stats["scale"], stats["mode_seeking"])
        return E, stats


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
        checks.real("guidance_scale", self.guidance_scale)
        if self.cfg not in CFG_CONVENTIONS:
            raise ValueError(f"cfg: expected one of {CFG_CONVENTIONS}, got {self.cfg!r}")

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, _, _ = _prepare(eps_cond, eps_uncond, noise, t)
        c, u = _up(eps_cond), _up(eps_uncond)
        eps_cfg = (u if self.cfg == "standard" else c) + self.guidance_scale * (c - u)
        E = eps_cfg - _up(noise) if self.variance_reduction else eps_cfg
        return _finish(E, eps_cond, batch.B, return_stats)


@dataclass(frozen=True)
class ModeSeeking:
    """The mode-seeking term alone: ``eps_cond`` (``eps_cond - noise`` with variance reduction)."""

    variance_reduction: bool = False
    name = "mode-seeking"
    branches = ("cond",)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, _, _ = _prepare(eps_cond, None, noise, t, needs=("cond",))
        c = _up(eps_cond)
        E = c - _up(noise) if self.variance_reduction else c + 0
        return _finish(E, eps_cond, batch.B, return_stats)


@dataclass(frozen=True)
class CSD:
    """Classifier score distillation: the mode-disengaging term alone, ``scale (eps_c - eps_u)``."""

    scale: float = 1.0
    name = "csd"
    branches = ("cond", "uncond")

    def __post_init__(self):
        checks.real("scale", self.scale)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, _, _ = _prepare(eps_cond, eps_uncond, noise, t)
        E = self.scale * (_up(eps_cond) - _up(eps_uncond))
        return _finish(E, eps_cond, batch.B, return_stats)


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
        checks.real("guidance_scale", self.guidance_scale)
        checks.real("t_threshold", self.t_threshold)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, t64, neg = _prepare(eps_cond, eps_uncond, noise, t, eps_negative, needs=self.branches)
        c, u = _up(eps_cond), _up(eps_uncond)
        delta_d = _where_rows(t64 < self.t_threshold, u, u - _up(neg))
        E = delta_d + self.guidance_scale * (c - u)
        return _finish(E, eps_cond, batch.B, return_stats)


@dataclass(frozen=True)
class _SSDAblation:
    """SSD with one design choice changed (Fig. 6); a float64 path, not the fused kernel.

    ``t_b > M`` gives ``h_b``; ``t_b <= M`` gives the variant's direction ``c - r n``,
    rescaled to ``||h_b||`` unless the variant is ``"no-rescale"``, by the same maths and
    the same degeneracy rule as ``estimate`` (``ssd_toolkit._ssd_math``). The inputs are
    copied to float64 (on their device) for the duration of the call.
    """

    M: float = 200.0
    branches = ("cond", "uncond")
    variant = "ssd"

    def __post_init__(self):
        checks.real("M", self.M, array_0d=True, noun="scalar")

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, t64, _ = _prepare(eps_cond, eps_uncond, noise, t)
        B, N = batch.B, batch.N
        c, u, n = (frameworks.astype(frameworks.flat_rows(x, B, N), "float64") for x in (eps_cond, eps_uncond, noise))
        seeking = frameworks.from_host(t64 <= float(self.M), c)
        E, stats = _ssd_math.estimate_rows(c, u, n, seeking, self.variant)
        out = _down(E.reshape(batch.shape), eps_cond)
        if not return_stats:
            return out
        unscaled = stats["eps_tilde_norm"] if self.variant == "no-rescale" else None
        stats["grad_norm"] = _ssd_math.gradient_norm(stats["h_norm"], stats["scale"], seeking, unscaled)
        return out, stats


@dataclass(frozen=True)
class SSDNoVarianceReduction(_SSDAblation):
    """Fig. 6 "w/o variance reduction": ``eps_cond`` instead of ``eps_tilde``, still rescaled."""

    name = "ssd-no-vr"
    variant = "no-vr"


@dataclass(frozen=True)
class SSDSDSNoiseTerm(_SSDAblation):
    """Fig. 6 with SDS's variance reduction: ``eps_cond - noise`` instead of ``eps_cond - r noise``
    (``r`` reported as 1), still rescaled."""

    name = "ssd-sds-vr"
    variant = "sds-vr"


@dataclass(frozen=True)
class SSDNoRescale(_SSDAblation):
    """Fig. 6 "w/o rescaling": ``eps_tilde`` itself for ``t_b <= M`` (``scale`` reported as 1)."""

    name = "ssd-no-rescale"
    variant = "no-rescale"


def at_step(estimator, train_step, max_iteration=None):
    """The estimator for one training step: ``estimator.at_step(...)`` where it anneals
    (``csd-annealed``, ``sds-bridge``, ``ism``), the estimator itself otherwise."""
    step = getattr(estimator, "at_step", None)
    return estimator if step is None else step(train_step, max_iteration)


ESTIMATORS = {
    cls.name: cls
    for cls in (SSD, SDS, ModeSeeking, CSD, NFSD, SSDNoVarianceReduction, SSDSDSNoiseTerm, SSDNoRescale,
                AnnealedCSD, SDSBridge, ISM)
}


def list_estimators():
    """Names accepted by ``get_estimator``."""
    return sorted(ESTIMATORS)


def get_estimator(name, **params):
    """An estimator by name, e.g. ``get_estimator("ssd", M=200)``.

    Raises:
        ValueError: unknown name (the message lists the known ones), bad parameter values.
        TypeError: a parameter the estimator does not take.
    """
    return lookup(ESTIMATORS, name)(**params)
