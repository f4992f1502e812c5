"""Estimators that change over training, and ISM, which needs the denoiser itself.

``AnnealedCSD`` (DreamWaltz-G's ``csd``), ``SDSBridge`` and ``ISM`` follow the interface of
``ssd_toolkit.estimators`` and add ``at_step(train_step, max_iteration)``, which returns the
estimator for that step. ``ISM`` also has ``needs_denoiser = True`` and ``noisy_input``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .. import checks, frameworks
from .base import check_step, finish, prepare_branches, up


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
            checks.real("progress", self.progress)

    def at_step(self, train_step, max_iteration):
        if max_iteration is None:
            return replace(self, progress=None)
        check_step(train_step, max_iteration)
        return replace(self, progress=float(train_step) / float(max_iteration))

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, _, neg = prepare_branches(eps_cond, eps_uncond, noise, t, eps_negative, needs=self.branches)
        c, u = up(eps_cond), up(eps_uncond)
        if self.progress is None:
            E = c - u
        else:
            p = self.progress
            E = c + (-0.5 * p) * u + (-1.0 + 0.5 * p) * up(neg)
        return finish(E, batch.dtype, batch.B, return_stats)


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
        checks.cfg_scale("guidance_scale", self.guidance_scale)
        checks.real("scale", self.scale)
        checks.real("stage_two_start_step", self.stage_two_start_step)
        if self.stage not in (1, 2):
            raise ValueError(f"stage: expected 1 or 2, got {self.stage!r}")

    @property
    def branches(self):
        return ("cond", "uncond") if self.stage == 1 else ("cond", "negative")

    def at_step(self, train_step, max_iteration=None):
        check_step(train_step, max_iteration)
        return replace(self, stage=1 if train_step < self.stage_two_start_step else 2)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, _, src = prepare_branches(eps_cond, eps_uncond, noise, t, eps_negative, needs=self.branches)
        c = up(eps_cond)
        if self.stage == 1:
            u = up(eps_uncond)
            E = u + self.guidance_scale * (c - u) - up(noise)
        else:
            E = self.scale * (c - up(src))
        return finish(E, batch.dtype, batch.B, return_stats)


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
        checks.cfg_scale("guidance_scale", self.guidance_scale)
        for field, least in (("delta_t", 0), ("delta_t_start", 0), ("xs_delta_t", 1), ("xs_inv_steps", 1)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"{field}: expected an integer >= {least}, got {value!r}")
        checks.real("warmup_fraction", self.warmup_fraction)

    @property
    def interval(self):
        """The current ``t - s`` (``delta_t`` until ``at_step`` anneals it)."""
        return self.delta_t if self.delta is None else self.delta

    def at_step(self, train_step, max_iteration=None):
        check_step(train_step, max_iteration)
        if max_iteration is None:
            return replace(self, delta=None)
        warmup = max(int(max_iteration * self.warmup_fraction), 1)
        rate = 1.0 - min(train_step / warmup, 1.0)
        return replace(self, delta=int(self.delta_t + np.ceil(rate * (self.delta_t_start - self.delta_t))))

    def noisy_input(self, eps_uncond, x0, noise, t, alphas_cumprod):
        """``(x_t, target, calls)`` for per-sample ``t`` (``s = max(t - interval, 0)``); see
        ``ssd_toolkit.estimators.ddim_inversion.ism_noisy_input``."""
        from .ddim_inversion import ism_noisy_input  # noqa: PLC0415

        kind = str(getattr(t, "dtype", type(t).__name__))
        if "int" not in kind:
            raise TypeError(f"t: expected integer timesteps [B] (they index alphas_cumprod), got {kind}")
        s = t - self.interval
        s = frameworks.namespace(s).where(s < 0, 0, s)
        return ism_noisy_input(eps_uncond, x0, noise, t, s, alphas_cumprod, self.xs_delta_t, self.xs_inv_steps)

    def __call__(self, eps_cond, eps_uncond, noise, t, eps_negative=None, return_stats=False):
        batch, _, _ = prepare_branches(eps_cond, eps_uncond, noise, t)
        c, u = up(eps_cond), up(eps_uncond)
        E = u + self.guidance_scale * (c - u) - up(noise)
        return finish(E, batch.dtype, batch.B, return_stats)
