"""The guidance registered with threestudio as ``ssd-toolkit-guidance``.

Importing this module registers it (threestudio must be importable). Two ways in:

- one import before the config is built, e.g. at the top of threestudio's ``launch.py``:
  ``import ssd_toolkit.integrations.threestudio.guidance``;
- or a folder in threestudio's ``custom/`` (its ``launch.py`` imports every
  ``custom/<name>/__init__.py``): ``python -m ssd_toolkit.integrations.threestudio
  install <threestudio checkout>`` writes one.

Then ``system.guidance_type: ssd-toolkit-guidance`` in the YAML; ``system.guidance`` takes
``config.GuidanceConfig``'s fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from .adapter import GuidanceAdapter
from .config import GuidanceConfig

NAME = "ssd-toolkit-guidance"
INSTALL_HINT = (
    "ssd_toolkit.integrations.threestudio.guidance needs threestudio importable: run from a threestudio "
    "checkout (https://github.com/threestudio-project/threestudio) or put it on PYTHONPATH"
)

try:
    import threestudio
    from threestudio.utils.base import BaseObject
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"{INSTALL_HINT}: {exc}") from exc


class SSDToolkitGuidance(GuidanceAdapter, BaseObject):
    """``GuidanceAdapter`` as a threestudio ``BaseObject``: built from ``system.guidance``,
    ``Updateable`` (the system's ``update_step`` hook drives the t range), device from
    threestudio's ``get_device()``."""

    @dataclass
    class Config(GuidanceConfig, BaseObject.Config):
        pass

    cfg: Config


if threestudio.__modules__.get(NAME) is None:
    # a second copy of this file (e.g. copied into custom/) must not register twice
    SSDToolkitGuidance = threestudio.register(NAME)(SSDToolkitGuidance)
else:
    SSDToolkitGuidance = threestudio.__modules__[NAME]
