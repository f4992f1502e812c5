"""Post-processing of a latent gradient ``[B, ...]`` (torch), named as DreamWaltz-G and
threestudio name the options. ``apply_gradient_options`` runs them in DreamWaltz-G's
order (``calc_gradients``: clip, norm, nan_to_num), then threestudio's element clamp.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import checks


def _torch():
    import torch  # noqa: PLC0415 - torch is needed only when an option is applied

    return torch


def grad_latent_clip(g, scale=1.0):
    """DreamWaltz-G's ``grad_latent_clip``: clamp every entry to ``[-s, s]`` with
    ``s = scale * sqrt(sum(g^2) / count_nonzero(g))`` over the whole batch (non-finite
    entries counted as 0 in ``s``), then NaN -> 0."""
    finite = g.nan_to_num(0.0, 0.0, 0.0)
    s = ((finite**2).sum() / finite.count_nonzero()) ** 0.5 * scale
    return g.clamp(-s, s).nan_to_num(0.0)


def grad_latent_norm(g):
    """DreamWaltz-G's ``grad_latent_norm``: non-finite -> 0, then each sample to unit L2 norm
    (an all-zero sample stays 0)."""
    torch = _torch()
    g = g.nan_to_num(0.0, 0.0, 0.0)
    return torch.nn.functional.normalize(g, p=2, dim=tuple(range(1, g.ndim)))


@dataclass(frozen=True)
class GradientOptions:
    """Which options run; all off by default.

    Attributes:
        grad_latent_clip: DreamWaltz-G's batch-RMS clamp (``grad_latent_clip_scale`` times
            the RMS of the non-zero entries).
        grad_latent_clip_scale: its multiplier (DreamWaltz-G's default 1.0).
        grad_latent_norm: per-sample unit L2 norm after non-finite -> 0.
        grad_latent_nan_to_num: ``torch.nan_to_num`` (NaN -> 0, +-inf -> the dtype's
            largest finite values).
        grad_clip: threestudio's ``grad_clip`` value: clamp every entry to ``[-v, v]``;
            None for off.
    """

    grad_latent_clip: bool = False
    grad_latent_clip_scale: float = 1.0
    grad_latent_norm: bool = False
    grad_latent_nan_to_num: bool = False
    grad_clip: float | None = None

    def __post_init__(self):
        for name in ("grad_latent_clip", "grad_latent_norm", "grad_latent_nan_to_num"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")
        checks.real("grad_latent_clip_scale", self.grad_latent_clip_scale, positive=True)
        if self.grad_clip is not None:
            checks.real("grad_clip", self.grad_clip, positive=True)

    def __call__(self, g):
        if self.grad_latent_clip:
            g = grad_latent_clip(g, self.grad_latent_clip_scale)
        if self.grad_latent_norm:
            g = grad_latent_norm(g)
        if self.grad_latent_nan_to_num:
            g = _torch().nan_to_num(g)
        if self.grad_clip is not None:
            g = g.clamp(-self.grad_clip, self.grad_clip)
        return g


def apply_gradient_options(g, options=None, **flags):
    """``g`` after the options (a ``GradientOptions`` or its fields as keywords)."""
    options = options if options is not None else GradientOptions(**flags)
    return options(g)
