"""The DreamWaltz drop-in: DreamWaltz's guidance class backed by ssd_toolkit (one changed import, one call).

``ControllableScoreDistillationSampling`` (``dreamwaltz_compat``) replaces DreamWaltz's class
of that name; ``register_guide_fields`` (``guide_config``) adds the ``guide.*`` fields it
reads to DreamWaltz's ``GuideConfig`` when called; ``timesteps`` holds DreamWaltz's timestep
schedule. The guidance itself is ``ssd_toolkit.integrations.guidance``; the avatar app
is ``ssd_toolkit.integrations.avatar``. Names load on first use, so importing this package imports no
torch. Guide: docs/integrations/dreamwaltz.md.
"""

__all__ = ["ControllableScoreDistillationSampling", "register_guide_fields"]


def __getattr__(name):
    if name == "ControllableScoreDistillationSampling":
        from .dreamwaltz_compat import ControllableScoreDistillationSampling  # noqa: PLC0415

        return ControllableScoreDistillationSampling
    if name == "register_guide_fields":
        from .guide_config import register_guide_fields  # noqa: PLC0415

        return register_guide_fields
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
