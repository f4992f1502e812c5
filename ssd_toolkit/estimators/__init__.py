"""Score-distillation estimators behind one interface (one file per family, registered by name).

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

from .classic import CFG_CONVENTIONS, CSD, NFSD, SDS, ModeSeeking
from .registry import ESTIMATORS, at_step, get_estimator, list_estimators
from .scheduled import ISM, SDS_BRIDGE_SOURCE_MODIFIER, AnnealedCSD, SDSBridge
from .ssd import SSD, SSDAblation, SSDNoRescale, SSDNoVarianceReduction, SSDSDSNoiseTerm

__all__ = [
    "CFG_CONVENTIONS",
    "CSD",
    "ESTIMATORS",
    "ISM",
    "NFSD",
    "SDS",
    "SDS_BRIDGE_SOURCE_MODIFIER",
    "SSD",
    "AnnealedCSD",
    "ModeSeeking",
    "SDSBridge",
    "SSDAblation",
    "SSDNoRescale",
    "SSDNoVarianceReduction",
    "SSDSDSNoiseTerm",
    "at_step",
    "get_estimator",
    "list_estimators",
]
