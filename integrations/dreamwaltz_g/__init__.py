"""SSD in DreamWaltz-G's own trainer (Yukun-Huang/DreamWaltz-G) by one changed import.

``ScoreDistillation``, ``ScoreDistillationXL``, ``ControlNetScoreDistillation`` and
``ControlNetScoreDistillationXL`` are DreamWaltz-G's guidance classes of those names,
subclassed at first use in the user's environment (none of their code is shipped) with
``mixin.SSDGuidanceMixin`` in front: ``guide.sds_loss_type: ssd`` (``guide.ssd_M``, default
200), ``nfsd`` at any batch size and a working ``ism`` through ssd_toolkit's estimators;
their other loss types run their own code. See docs/integrations/dreamwaltz-g.md.

Importing this package imports neither torch nor DreamWaltz-G; it adds ``ssd_M`` to
DreamWaltz-G's ``GuideConfig`` when their ``configs`` module is already loaded.
"""

from .config import register_guide_fields

__all__ = ["ControlNetScoreDistillation", "ControlNetScoreDistillationXL", "ScoreDistillation",
           "ScoreDistillationXL", "SSDGuidanceMixin", "register_guide_fields"]

register_guide_fields()  # DreamWaltz-G's GuideConfig, if its configs module is loaded


def __getattr__(name):
    if name == "SSDGuidanceMixin":
        from .mixin import SSDGuidanceMixin  # noqa: PLC0415

        return SSDGuidanceMixin
    from .classes import THEIR_CLASSES, build  # noqa: PLC0415

    if name in THEIR_CLASSES:
        return build(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
