"""DreamWaltz's ``guide.*`` fields as the drop-in guidance reads them, and the fields it adds.

DreamWaltz's ``GuideConfig`` (``configs/train_config.py``) is a pyrallis dataclass; pyrallis
rejects keys the dataclass does not declare. ``register_guide_fields`` adds ours
(``estimator``, ``ssd_M``, ``negative_prompt``, ``source_prompt``) to that class, with
defaults, so ``--guide.estimator sds`` and a YAML ``guide: {estimator: ...}`` parse.

It is an explicit call, made once in DreamWaltz's ``core/trainer.py`` next to the changed
import, and never a side effect of importing this package: the class belongs to
DreamWaltz, and code that merely imports ssd_toolkit (tests, the avatar app, another
trainer with a ``configs.train_config`` module) must not find it changed. A subclass would
not do: pyrallis builds ``cfg.guide`` from the annotation of DreamWaltz's ``TrainConfig``,
so a subclass would need DreamWaltz's config file edited as well.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ssd_toolkit.integrations.guidance.cfg_schedule import check_guidance_adjust
from ssd_toolkit.integrations.guidance.config_fields import add_dataclass_fields
from ssd_toolkit.integrations.guidance.prompts import sds_bridge_source_prompt

# DreamWaltz's GuideConfig defaults, for a guide_cfg that lacks a field (or is None)
DREAMWALTZ_GUIDE_DEFAULTS = {
    "loss_type": "sjc",
    "guidance_adjust": "constant",
    "min_timestep": 0.02,
    "max_timestep": 0.98,
    "time_sampling": "uniform",
    "time_prior": "uniform",
    "grad_clip": False,
    "grad_norm": True,
}
# the fields this package adds: (name, type, default). The prompts are the texts of the
# estimators' third branch: NFSD's and annealed CSD's negative prompt, SDS-Bridge's source
# prompt ("": guide.text plus its failure-mode modifier).
EXTRA_GUIDE_FIELDS = (
    ("estimator", str, "ssd"),
    ("ssd_M", float, 200.0),
    ("negative_prompt", str, ""),
    ("source_prompt", str, ""),
)
LOSS_TYPES = ("sjc", "sjc-v2", "dreamfusion", "stable-dreamfusion", "latent-nerf")
DREAMWALTZ_CONFIG_MODULE = "configs.train_config"


@dataclass(frozen=True)
class GuideSettings:
    """The validated ``guide.*`` values the drop-in uses (DreamWaltz's names)."""

    loss_type: str
    guidance_adjust: str
    min_timestep: float
    max_timestep: float
    time_sampling: str
    time_prior: str
    grad_clip: bool
    grad_norm: bool
    estimator: str
    ssd_M: float
    negative_prompt: str
    source_prompt: str


def read_guide_cfg(guide_cfg, loss_type=None):
    """``GuideSettings`` from DreamWaltz's ``GuideConfig`` (or any object with those
    attributes; None for all defaults). ``source_prompt`` comes back resolved: the field,
    else ``guide.text`` plus SDS-Bridge's failure-mode modifier ("" when both are empty).

    Args:
        guide_cfg: the trainer's ``cfg.guide``.
        loss_type: the constructor's ``weight_mode`` (DreamWaltz passes ``guide.loss_type``);
            None reads ``guide_cfg.loss_type``.

    Raises:
        ValueError: an unknown ``loss_type`` or ``guidance_adjust``; the message names the
            field. Timestep fields are checked by ``DreamWaltzTimesteps``, the estimator
            by the guidance.
    """
    values = {}
    for name, default in DREAMWALTZ_GUIDE_DEFAULTS.items():
        values[name] = getattr(guide_cfg, name, default)
    for name, _, default in EXTRA_GUIDE_FIELDS:
        values[name] = getattr(guide_cfg, name, default)
    if loss_type is not None:
        values["loss_type"] = loss_type
    if values["loss_type"] not in LOSS_TYPES:
        raise ValueError(f"guide.loss_type (weight_mode): expected one of {LOSS_TYPES}, got {values['loss_type']!r}")
    check_guidance_adjust(values["guidance_adjust"])
    values["grad_clip"], values["grad_norm"] = bool(values["grad_clip"]), bool(values["grad_norm"])
    values["ssd_M"] = float(values["ssd_M"])
    values["estimator"] = str(values["estimator"])
    for name in ("negative_prompt", "source_prompt"):
        if not isinstance(values[name], str):
            raise TypeError(f"guide.{name}: expected a str, got {values[name]!r}")
    text = getattr(guide_cfg, "text", "") or ""
    if values["source_prompt"] or text:
        values["source_prompt"] = sds_bridge_source_prompt(text, values["source_prompt"])
    return GuideSettings(**values)


def register_guide_fields(config_cls=None):
    """Add ``EXTRA_GUIDE_FIELDS`` (with defaults) to DreamWaltz's ``GuideConfig`` dataclass.

    Call it before pyrallis parses the config (in ``core/trainer.py``, which DreamWaltz's
    ``train.py`` imports first, right after the changed import).

    Args:
        config_cls: the dataclass to extend; None takes ``GuideConfig`` from DreamWaltz's
            ``configs.train_config`` if that module is loaded (else does nothing).

    Returns:
        The class extended (the same object, so ``TrainConfig``'s annotation sees the
        fields), or None when there was nothing to extend. Calling it again is harmless.
    """
    if config_cls is None:
        module = sys.modules.get(DREAMWALTZ_CONFIG_MODULE)
        config_cls = getattr(module, "GuideConfig", None)
        if config_cls is None:
            return None
    return add_dataclass_fields(config_cls, EXTRA_GUIDE_FIELDS)
