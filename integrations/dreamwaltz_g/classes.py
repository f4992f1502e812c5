"""DreamWaltz-G's four guidance classes with ``SSDGuidanceMixin`` in front, built at run time.

Nothing of DreamWaltz-G is shipped here: ``build()`` imports their
``core.guidance.stable_diffusion`` and ``core.guidance.controlnet`` from the user's
environment (their repository root on ``sys.path``, as when their ``main.py`` runs) and
subclasses what it finds. The classes are built once and cached.
"""

from __future__ import annotations

import functools
import importlib

from .config import register_guide_fields
from .mixin import SSDGuidanceMixin

# our name -> (their module, their class, their plain-UNet class whose _predict ISM inverts with)
THEIR_CLASSES = {
    "ScoreDistillation": ("core.guidance.stable_diffusion", "ScoreDistillation", "ScoreDistillation"),
    "ScoreDistillationXL": ("core.guidance.stable_diffusion", "ScoreDistillationXL", "ScoreDistillationXL"),
    "ControlNetScoreDistillation": ("core.guidance.controlnet", "ControlNetScoreDistillation", "ScoreDistillation"),
    "ControlNetScoreDistillationXL": ("core.guidance.controlnet", "ControlNetScoreDistillationXL",
                                      "ScoreDistillationXL"),
}
IMPORT_HINT = (
    "run from DreamWaltz-G's repository root (its main.py does), or put that root on sys.path / PYTHONPATH"
)


def _import(module_name):
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"ssd_toolkit.integrations.dreamwaltz_g extends DreamWaltz-G's guidance, but {module_name!r} does not "
            f"import ({exc}); {IMPORT_HINT}"
        ) from exc


@functools.cache
def build(name):
    """Our subclass of DreamWaltz-G's class ``name`` (a key of ``THEIR_CLASSES``).

    Raises:
        KeyError: an unknown name.
        ImportError: DreamWaltz-G's guidance modules do not import here (with what to do).
    """
    module_name, class_name, plain_name = THEIR_CLASSES[name]
    register_guide_fields()  # their configs module is loaded by now where their guidance imports
    theirs = getattr(_import(module_name), class_name)
    plain = getattr(_import("core.guidance.stable_diffusion"), plain_name)
    namespace = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"DreamWaltz-G's ``{class_name}`` with ssd_toolkit's loss types (``SSDGuidanceMixin``).",
        "_plain_predict": plain._predict,
    }
    return type(name, (SSDGuidanceMixin, theirs), namespace)
