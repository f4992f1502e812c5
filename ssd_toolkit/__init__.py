"""ssd_toolkit: Stable Score Distillation (SSD) estimators, kernels and experiments.

``import ssd_toolkit`` never fails and never imports torch or the compiled module; both
are loaded on first use.
"""

from .engine.extension import backends
from .core import estimate
from .diagnostics import step_diagnostics
from .estimators import get_estimator, list_estimators
from .losses import inject_gradient, sds_loss
from .schedules import NoiseSchedule, stable_diffusion_schedule
from .terms import mode_disengaging, optimal_coefficient, projection_ratio, variance_reduced
from .samplers import get_sampler, list_samplers
from .weighting import get_weighting, list_weightings

__version__ = "0.1.0"

__all__ = [
    "NoiseSchedule",
    "backends",
    "estimate",
    "get_estimator",
    "get_sampler",
    "get_weighting",
    "inject_gradient",
    "list_estimators",
    "list_samplers",
    "list_weightings",
    "mode_disengaging",
    "optimal_coefficient",
    "projection_ratio",
    "sds_loss",
    "stable_diffusion_schedule",
    "step_diagnostics",
    "variance_reduced",
]
