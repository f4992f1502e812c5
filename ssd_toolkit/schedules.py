"""Diffusion noise schedules: ``x_t = alpha_t x + sigma_t eps`` (variance preserving)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import frameworks


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete DDPM schedule indexed by integer timesteps ``0 .. T-1``.

    Attributes:
        alphas_cumprod: ``abar_t``, float64 ``[T]``.
    """

    alphas_cumprod: np.ndarray

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def _index(self, t):
        return frameworks.timestep_indices(t, self.num_timesteps)

    def alpha_bar(self, t):
        """``abar_t`` for integer (or integer-valued) timesteps t."""
        return self.alphas_cumprod[self._index(t)]

    def alpha(self, t):
        """``alpha_t = sqrt(abar_t)``, the signal scale."""
        return np.sqrt(self.alpha_bar(t))

    def sigma(self, t):
        """``sigma_t = sqrt(1 - abar_t)``, the noise scale."""
        return np.sqrt(1.0 - self.alpha_bar(t))


def scaled_linear_betas(num_timesteps=1000, beta_start=0.00085, beta_end=0.012):
    """Stable Diffusion's betas: linear in sqrt(beta)."""
    return np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=np.float64) ** 2


def from_betas(betas) -> NoiseSchedule:
    return NoiseSchedule(np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)))


def stable_diffusion_schedule(num_timesteps=1000) -> NoiseSchedule:
    """SD 1.x/2.x schedule: 1000 steps, scaled-linear betas 0.00085..0.012 (abar 0.99915..0.00466)."""
    return from_betas(scaled_linear_betas(num_timesteps))
