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

from dataclasses import dataclass, replace

import numpy as np

from . import _arrays, _ssd_math
from ._registry import lookup
from .core import BACKENDS, estimate

CFG_CONVENTIONS = ("standard", "threestudio")


# ---------------------------------------------------------------------------- helpers


def _prepare(eps_cond, eps_uncond, noise, t, eps_negative=None, needs=("cond", "uncond")):
    """Validate the branches an estimator reads and ``t``; returns (batch, t64, negative)."""
    ref = eps_cond
    batch = _arrays.validate_arrays(ref, eps_uncond if "uncond" in needs else ref, noise if noise is not None else ref)
    negative = None
    if "negative" in needs:
        if eps_negative is None:
            raise ValueError("eps_negative: expected the negative-prompt branch [B, ...] (this estimator needs it), got None")
        _arrays.validate_arrays(ref, ref, eps_negative)
        negative = eps_negative
    t64 = _arrays.validate_timesteps(t, batch.B)
    return batch, t64, negative


def _is_half(x):
    return _arrays.dtype_name(x) in ("float16", "bfloat16")


def _up(x):
    """x in its compute dtype: float32 for half inputs, itself otherwise."""
    if not _is_half(x):
        return x
    return x.float() if _arrays.is_torch_tensor(x) else x.astype(np.float32)


def _down(y, like):
    """y back in like's dtype."""
    if _arrays.is_torch_tensor(y):
        return y.to(like.dtype)
    return y.astype(like.dtype, copy=False)


def _where_rows(mask, a, b):
    """Per-sample select: ``a_b`` where ``mask_b`` else ``b_b``; mask is a host bool [B]."""
    shape = (mask.shape[0],) + (1,) * (len(a.shape) - 1)
    if _arrays.is_torch_tensor(a):
        m = _arrays.from_numpy_like(mask.reshape(shape), a, dtype=_arrays._torch().bool)
        return _arrays._torch().where(m, a, b)
    return np.where(mask.reshape(shape), a, b)


def _finish(E, like, B, return_stats, stats=None):
    out = _down(E, like)
    if not return_stats:
        return out
    stats = dict(stats or {})
    stats["grad_norm"] = _arrays.row_norms(E, B)
    return out, stats


def _check_real(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a finite real number, got {type(value).__name__} {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite real number, got {value}")


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
        _arrays.validate_threshold(self.M)
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
        _check_real("guidance_scale", self.guidance_scale)
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
        _check_real("scale", self.scale)

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
        _check_real("guidance_scale", self.guidance_scale)
        _check_real("t_threshold", self.t_threshold)

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
        _arrays.validate_threshold(self.M)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, t64, _ = _prepare(eps_cond, eps_uncond, noise, t)
        B, N = batch.B, batch.N
        torch = _arrays._torch() if batch.library == "torch" else None
        rows = [_arrays.flat_rows(x, B, N) for x in (eps_cond, eps_uncond, noise)]
        c, u, n = (r.double() for r in rows) if torch is not None else (r.astype(np.float64) for r in rows)
        seeking = t64 <= float(self.M)
        if torch is not None:
            seeking = torch.from_numpy(seeking).to(c.device)
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


@dataclass(frozen=True)
class AnnealedCSD:
    """DreamWaltz-G's ``csd`` as its trainer calls it: three branches, the negative weight
    annealed over training progress ``p = train_step / max_iteration``.

    ``c - (p/2) u - (1 - p/2) neg``; ``progress=None`` gives ``c - u`` (what DreamWaltz-G
    computes when it is not given the step). ``at_step(train_step, max_iteration)`` returns
    the estimator for that step; the guidance modules call it every step.
    """

    progress: float | None = None
    name = "csd-annealed"
    branches = ("cond", "uncond", "negative")

    def __post_init__(self):
        if self.progress is not None:
            _check_real("progress", self.progress)

    def at_step(self, train_step, max_iteration):
        if max_iteration is None:
            return replace(self, progress=None)
        _check_step(train_step, max_iteration)
        return replace(self, progress=float(train_step) / float(max_iteration))

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, _, neg = _prepare(eps_cond, eps_uncond, noise, t, eps_negative, needs=self.branches)
        c, u = _up(eps_cond), _up(eps_uncond)
        if self.progress is None:
            E = c - u
        else:
            p = self.progress
            E = c + (-0.5 * p) * u + (-1.0 + 0.5 * p) * _up(neg)
        return _finish(E, eps_cond, batch.B, return_stats)


SDS_BRIDGE_SOURCE_MODIFIER = (
    "oversaturated, smooth, pixelated, cartoon, foggy, hazy, blurry, bad structure, noisy, malformed"
)


@dataclass(frozen=True)
class SDSBridge:
    """SDS-Bridge (McAllister et al., NeurIPS 2024): two stages, SDS then the bridge.

    Stage 1 (``train_step < stage_two_start_step``): SDS, ``u + s (c - u) - n``.
    Stage 2: ``scale (c - src)``, where ``src`` is the prediction for the *source* prompt
    (the target prompt plus ``SDS_BRIDGE_SOURCE_MODIFIER``, a description of SDS's failure
    modes). The source prediction arrives in the ``negative`` slot: the guidance modules
    encode their ``source_prompt`` option for it. Stage 2 costs what SDS costs (two UNet
    branches). Defaults as the authors' threestudio config: ``guidance_scale=100``,
    ``scale=1`` (``stage_two_weight``), ``stage_two_start_step=20000``; ``stage=2`` until
    ``at_step`` is called.
    """

    guidance_scale: float = 100.0
    scale: float = 1.0
    stage_two_start_step: int = 20000
    stage: int = 2
    name = "sds-bridge"

    def __post_init__(self):
        _check_real("guidance_scale", self.guidance_scale)
        _check_real("scale", self.scale)
        _check_real("stage_two_start_step", self.stage_two_start_step)
        if self.stage not in (1, 2):
            raise ValueError(f"stage: expected 1 or 2, got {self.stage!r}")

    @property
    def branches(self):
        return ("cond", "uncond") if self.stage == 1 else ("cond", "negative")

    def at_step(self, train_step, max_iteration=None):
        _check_step(train_step, max_iteration)
        return replace(self, stage=1 if train_step < self.stage_two_start_step else 2)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, _, src = _prepare(eps_cond, eps_uncond, noise, t, eps_negative, needs=self.branches)
        c = _up(eps_cond)
        if self.stage == 1:
            u = _up(eps_uncond)
            E = u + self.guidance_scale * (c - u) - _up(noise)
        else:
            E = self.scale * (c - _up(src))
        return _finish(E, eps_cond, batch.B, return_stats)


@dataclass(frozen=True)
class ISM:
    """Interval Score Matching (LucidDreamer, Liang et al. CVPR 2024); denoiser-aware.

    ``needs_denoiser``: the guidance builds the noisy input with ``noisy_input``: DDIM
    inversion of the clean latent to ``x_s``, ``s = t - delta`` (unconditional, up to
    ``xs_inv_steps`` steps of ``xs_delta_t``), one step ``s -> t``, and ISM's target
    ``eps_uncond(x_s, s)``, which it passes in the ``noise`` slot. The estimator is then
    ``u + s (c - u) - target`` at ``x_t`` (standard CFG); the weighting LucidDreamer uses is
    ``ism`` (``sqrt((1 - abar_t) / abar_t)``). Cost per step: ``ceil(s / xs_delta_t)``
    (1 to ``xs_inv_steps``) + 1 unconditional calls and one CFG call.

    ``at_step`` anneals the interval as LucidDreamer and DreamWaltz-G do:
    ``delta = delta_t + ceil(rate (delta_t_start - delta_t))``, ``rate = 1 - min(step /
    (warmup_fraction * max_iteration), 1)``. Defaults: LucidDreamer's (guidance 7.5,
    delta 80 from 100, interval 200, 5 steps; warm-up 1500 of 5000 iterations).
    """

    guidance_scale: float = 7.5
    delta_t: int = 80
    delta_t_start: int = 100
    xs_delta_t: int = 200
    xs_inv_steps: int = 5
    warmup_fraction: float = 0.3
    delta: int | None = None
    name = "ism"
    branches = ("cond", "uncond")
    needs_denoiser = True

    def __post_init__(self):
        _check_real("guidance_scale", self.guidance_scale)
        for field in ("delta_t", "delta_t_start", "xs_delta_t", "xs_inv_steps"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if field.startswith("delta") else 1):
                raise ValueError(f"{field}: expected an integer >= {0 if field.startswith('delta') else 1}, got {value!r}")
        _check_real("warmup_fraction", self.warmup_fraction)

    @property
    def interval(self):
        """The current ``t - s`` (``delta_t`` until ``at_step`` anneals it)."""
        return self.delta_t if self.delta is None else self.delta

    def at_step(self, train_step, max_iteration=None):
        _check_step(train_step, max_iteration)
        if max_iteration is None:
            return replace(self, delta=None)
        warmup = max(int(max_iteration * self.warmup_fraction), 1)
        rate = 1.0 - min(train_step / warmup, 1.0)
        return replace(self, delta=int(self.delta_t + np.ceil(rate * (self.delta_t_start - self.delta_t))))

    def noisy_input(self, eps_uncond, x0, noise, t, alphas_cumprod):
        """``(x_t, target, calls)`` for per-sample ``t`` (``s = max(t - interval, 0)``); see
        ``ssd_toolkit.ddim_inversion.ism_noisy_input``."""
        from .ddim_inversion import ism_noisy_input  # noqa: PLC0415

        kind = str(getattr(t, "dtype", type(t).__name__))
        if "int" not in kind:
            raise TypeError(f"t: expected integer timesteps [B] (they index alphas_cumprod), got {kind}")
        s = t - self.interval
        s = s.clamp(min=0) if _arrays.is_torch_tensor(s) else np.maximum(s, 0)
        return ism_noisy_input(eps_uncond, x0, noise, t, s, alphas_cumprod, self.xs_delta_t, self.xs_inv_steps)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, _, _ = _prepare(eps_cond, eps_uncond, noise, t)
        c, u = _up(eps_cond), _up(eps_uncond)
        E = u + self.guidance_scale * (c - u) - _up(noise)
        return _finish(E, eps_cond, batch.B, return_stats)


def _check_step(train_step, max_iteration):
    _check_real("train_step", train_step)
    if max_iteration is not None:
        _check_real("max_iteration", max_iteration)
        if max_iteration <= 0:
            raise ValueError(f"max_iteration: expected a positive number, got {max_iteration}")


def at_step(estimator, train_step, max_iteration=None):
    """The estimator for one training step: ``estimator.at_step(...)`` where it anneals
    (``csd-annealed``, ``sds-bridge``, ``ism``), the estimator itself otherwise."""
    step = getattr(estimator, "at_step", None)
    return estimator if step is None else step(train_step, max_iteration)


ESTIMATORS = {
    cls.name: cls
    for cls in (SSD, SDS, ModeSeeking, CSD, NFSD, SSDNoVarianceReduction, SSDSDSNoiseTerm, SSDNoRescale, AnnealedCSD, SDSBridge, ISM)
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
