"""DreamWaltz-style SMPL-conditioned avatar generation with SSD guidance.

Body model and skeleton conditions, ControlNet + Stable Diffusion guidance with any
``ssd_toolkit`` estimator, and the end-to-end ``ssd-toolkit avatar`` run.

``ControllableScoreDistillationSampling`` is a drop-in for DreamWaltz's own class of that
name (``dreamwaltz_compat``): DreamWaltz's trainer runs with SSD after one changed import.
Names here load on first use, so importing this package imports no torch.
"""

__all__ = ["ControllableScoreDistillationSampling", "register_guide_fields"]


def __getattr__(name):
    if name == "ControllableScoreDistillationSampling":
        from .dreamwaltz_compat import ControllableScoreDistillationSampling  # noqa: PLC0415

        return ControllableScoreDistillationSampling
    if name == "register_guide_fields":
        from .dw_guide_config import register_guide_fields  # noqa: PLC0415

        return register_guide_fields
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
