"""ssd_toolkit: Stable Score Distillation (SSD) estimators, kernels and experiments.

``import ssd_toolkit`` never fails and never imports torch or the compiled module; both
are loaded on first use.
"""

from ._extension import backends
from .core import estimate
from .estimators import get_estimator, list_estimators
from .schedules import NoiseSchedule, stable_diffusion_schedule
from .terms import mode_disengaging, optimal_coefficient, projection_ratio, variance_reduced
from .timesteps import get_sampler, list_samplers
from .weighting import get_weighting, list_weightings

__version__ = "0.1.0"

__all__ = [
    "NoiseSchedule",
    "backends",
    "estimate",
    "get_estimator",
    "get_sampler",
    "get_weighting",
    "list_estimators",
    "list_samplers",
    "list_weightings",
    "mode_disengaging",
    "optimal_coefficient",
    "projection_ratio",
    "stable_diffusion_schedule",
    "variance_reduced",
]
