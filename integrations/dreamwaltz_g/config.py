"""DreamWaltz-G's ``guide.*`` fields as the SSD guidance reads them, and the one it adds.

DreamWaltz-G's ``GuideConfig`` (``configs/__init__.py``) is a pyrallis dataclass; pyrallis
rejects keys it does not declare. ``register_guide_fields`` adds ``ssd_M`` (default 200)
to it, so ``--guide.ssd_M 500`` and a YAML ``guide: {ssd_M: 500}`` parse. Importing
``ssd_toolkit.integrations.dreamwaltz_g`` calls it when DreamWaltz-G's ``configs`` module
is already loaded; pyrallis parses in ``main.py`` before the trainer's ``init_diffusion``
imports the guidance, so for the command line the import must come earlier (the top of
``core/trainer.py``; docs/integrations/dreamwaltz-g.md).
"""

from __future__ import annotations

import dataclasses
import math
import sys

from ..guidance.config_fields import add_dataclass_fields

DREAMWALTZ_G_COMMIT = "9164dd7b17bbc83f1732fab888204d8b63d1072a"
DREAMWALTZ_G_CONFIG_MODULE = "configs"
SSD_M_DEFAULT = 200.0
EXTRA_GUIDE_FIELDS = (("ssd_M", float, SSD_M_DEFAULT),)  # (name, type, default)
# guide.sds_loss_type values: DreamWaltz-G's (core/guidance/basic.py) plus "ssd"
THEIR_LOSS_TYPES = ("sds", "sjc", "sjc-red", "custom", "csd", "nfsd", "ism", "z0", "z0_final", "x0", "x0_final")
LOSS_TYPES = THEIR_LOSS_TYPES + ("ssd",)
WEIGHT_TYPES = (None, "dreamfusion", "latent-nerf", "ism", "sjc")  # guide.sds_weight_type


def ssd_threshold(cfg):
    """``guide.ssd_M`` as a float (200 when the config has no such field).

    Raises:
        TypeError / ValueError: not a finite real number (the message names the field).
    """
    value = getattr(cfg, "ssd_M", SSD_M_DEFAULT)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"guide.ssd_M: expected a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"guide.ssd_M: expected a finite real number, got {value!r}")
    return float(value)


def check_guide_cfg(cfg):
    """Fail before any model loads on a value DreamWaltz-G's guidance would reject later.

    Raises:
        ValueError: an unknown ``guide.sds_loss_type`` or ``guide.sds_weight_type``, or a
            bad ``guide.ssd_M``; the message names the field.
    """
    loss_type = getattr(cfg, "sds_loss_type", "sds")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"guide.sds_loss_type: expected one of {LOSS_TYPES}, got {loss_type!r}")
    weight_type = getattr(cfg, "sds_weight_type", "sjc")
    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"guide.sds_weight_type: expected one of {WEIGHT_TYPES}, got {weight_type!r}")
    ssd_threshold(cfg)


def register_guide_fields(config_cls=None):
    """Add ``EXTRA_GUIDE_FIELDS`` (with defaults) to DreamWaltz-G's ``GuideConfig`` dataclass.

    Args:
        config_cls: the dataclass to extend; None takes ``GuideConfig`` from DreamWaltz-G's
            ``configs`` module if that module is loaded and has it (else does nothing).

    Returns:
        The class extended (the same object, so ``TrainConfig``'s annotation sees the
        field), or None when there was nothing to extend. Calling it again is harmless.

    Raises:
        TypeError: ``config_cls`` is not a dataclass.
    """
    if config_cls is None:
        config_cls = getattr(sys.modules.get(DREAMWALTZ_G_CONFIG_MODULE), "GuideConfig", None)
        if config_cls is None or not dataclasses.is_dataclass(config_cls):
            return None
    return add_dataclass_fields(config_cls, EXTRA_GUIDE_FIELDS)

