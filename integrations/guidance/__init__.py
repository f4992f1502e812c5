"""SD + ControlNet score-distillation guidance with any ``ssd_toolkit`` estimator, shared by every host.

- ``controlnet``: ``ControlNetGuidance`` (one batched network call per step) and ``load_guidance``.
- ``models``: loading the networks (``load_models``, model ids); ``tiny``: a few-MB random pipeline.
- ``estimator_choice``: host settings -> estimator arguments, and the ``grad_norm`` policy.
- ``cfg_schedule``: DreamWaltz's CFG-scale schedules; ``prompts``: view-dependent prompts.

Importing this package imports no torch; the names below load on first use.
"""

_LAZY = {
    "ControlNetGuidance": "controlnet",
    "GuidanceOutput": "controlnet",
    "load_guidance": "controlnet",
    "GuidanceModels": "models",
    "load_models": "models",
    "build_tiny_pipeline": "tiny",
    "view_prompts": "prompts",
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
