"""The guidance's config: StableDiffusionGuidance's field names plus the estimator's.

threestudio builds it from the YAML ``system.guidance`` block (``parse_structured``: an
unknown key is an error). Fields threestudio's own guidance has but this one cannot honour
are accepted only at their inert default; anything else raises one ``ValueError`` naming
the key as the YAML spells it (``system.guidance.<field>``), before any network is loaded
(``check_config``, ``estimator_arguments``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Optional

from ssd_toolkit.checks import did_you_mean

from .scheduled_value import check_schedule, entries_note, schedule_steps, schedule_values, scheduled_value

KEY = "system.guidance."  # how a threestudio YAML spells a field of this config
DEFAULT_LOSS_KEY = "loss_sds"  # the key threestudio's systems weight by system.loss.lambda_sds
PARITY_VALUES = ("auto", True, False)
SDS_GUIDANCE_SCALE = 100.0  # threestudio's stable-diffusion-guidance default
SCALE_TAKERS = ("sds",)  # guidance_scale is threestudio's SDS scale: NFSD, ISM ... keep their papers' 7.5
WEIGHTINGS = ("sds", "uniform", "fantasia3d", "ism")  # threestudio's weighting_strategy values, and ISM's


@dataclass
class GuidanceConfig:
    """Fields (threestudio's ``stable-diffusion-guidance`` names, then ours).

    Attributes:
        pretrained_model_name_or_path: SD checkpoint (hub id or local diffusers folder).
        enable_memory_efficient_attention: accepted; PyTorch 2 attention is already
            memory-efficient (threestudio says the same).
        enable_sequential_cpu_offload: must stay False (not supported).
        enable_attention_slicing: ``unet.set_attention_slice(1)``.
        enable_channels_last_format: UNet in channels-last memory format.
        guidance_scale: threestudio's CFG scale ``eps_c + s (eps_c - eps_u)``; used by the
            ``sds`` estimator only (None: threestudio's 100). Given for another estimator
            (SSD has no CFG scale; NFSD, ISM, SDS-Bridge keep their papers' scales) it is
            ignored with a warning; negative or non-finite is refused.
        grad_clip: None or a schedule; clamps each gradient entry to ``[-v, v]``.
        half_precision_weights: float16 networks (the estimator runs in float32).
        min_step_percent, max_step_percent: the t range ``int(1000 * C(value))``; numbers
            or threestudio schedules (e.g. ``[4999, 0.98, 0.5, 5000]``).
        sqrt_anneal, trainer_max_steps: HiFA's sqrt annealing of t, as threestudio.
        use_img_loss, use_sjc: must stay False (HiFA's image loss and SJC are not supported).
        var_red: only read by SJC in threestudio; accepted.
        weighting_strategy: ``w(t)``: "sds" (1 - abar), "uniform", "fantasia3d", "ism"
            (``sqrt((1 - abar) / abar)``, LucidDreamer's).
        token_merging, token_merging_params: ToMe via ``tomesd`` (installed separately).
        view_dependent_prompting: passed to the prompt processor's output.
        max_items_eval: accepted; ``guidance_eval`` is not supported.
        estimator: ``ssd_toolkit`` estimator name ("ssd", "sds", "csd", "nfsd", "ism",
            "csd-annealed", "sds-bridge", ...). The annealed ones follow ``global_step`` /
            ``trainer_max_steps``.
        estimator_params: its keyword arguments; default ``{"M": 200}`` for SSD and, for
            SDS, ``{"guidance_scale": guidance_scale, "cfg": "threestudio"}`` (exactly
            threestudio's SDS).
        loss_key: the returned loss's key; the system multiplies it by
            ``system.loss.lambda_<key without "loss_">``.
        seed: seeds the timestep and noise generators (not used under ``parity``).
        parity: "auto" (default: on for ``estimator: sds``, off otherwise), true or false.
            On, the step draws as threestudio's ``stable-diffusion-guidance`` does: the VAE
            posterior sample, then ``t`` (``torch.randint`` on the device) and the noise
            (``torch.randn_like``) from torch's global generator (seeded by threestudio's
            top-level ``seed``), with RGB resized to 512x512 before encoding and latents to
            64x64 (``rgb_as_latents``; also ``decode_latents``' default). Swapping the guidance
            type then reproduces that run's draws and, for SDS, its losses. Off, seeded
            generators of our own and the UNet's native latent size.
        controlnet_name_or_path: optional ControlNet; the call's ``cond_rgb`` keyword
            (``[B or 1, H, W, 3]`` in [0, 1]) is its condition image.
        condition_scale: ControlNet residual scale.
        source_prompt: SDS-Bridge's source prompt (e.g. the prompt + ", " +
            ``ssd_toolkit.estimators.SDS_BRIDGE_SOURCE_MODIFIER``); None uses the prompt
            processor's negative prompt for that slot.
        gradient_options: DreamWaltz-G's latent-gradient options as a dict
            (``grad_latent_clip``, ``grad_latent_clip_scale``, ``grad_latent_norm``,
            ``grad_latent_nan_to_num``; ``ssd_toolkit.gradient_options``), applied before
            ``grad_clip``.
    """

    pretrained_model_name_or_path: str = "runwayml/stable-diffusion-v1-5"
    enable_memory_efficient_attention: bool = False
    enable_sequential_cpu_offload: bool = False
    enable_attention_slicing: bool = False
    enable_channels_last_format: bool = False
    guidance_scale: Optional[float] = None
    grad_clip: Optional[Any] = None
    half_precision_weights: bool = True
    min_step_percent: Any = 0.02
    max_step_percent: Any = 0.98
    sqrt_anneal: bool = False
    trainer_max_steps: int = 25000
    use_img_loss: bool = False
    use_sjc: bool = False
    var_red: bool = True
    weighting_strategy: str = "sds"
    token_merging: bool = False
    token_merging_params: Optional[dict] = field(default_factory=dict)
    view_dependent_prompting: bool = True
    max_items_eval: int = 4

    estimator: str = "ssd"
    estimator_params: Optional[dict] = None
    loss_key: str = DEFAULT_LOSS_KEY
    seed: int = 0
    controlnet_name_or_path: Optional[str] = None
    condition_scale: float = 1.0
    source_prompt: Optional[str] = None
    gradient_options: Optional[dict] = None
    parity: Any = "auto"


_UNSUPPORTED = {
    "enable_sequential_cpu_offload": "sequential CPU offload needs a diffusers pipeline; this guidance holds networks",
    "use_img_loss": "HiFA's image-space loss is not implemented",
    "use_sjc": "SJC's scaled noising is not implemented",
}


def check_config(cfg):
    """Raise ``ValueError`` / ``TypeError`` naming the first field this guidance cannot honour."""
    for name, why in _UNSUPPORTED.items():
        if getattr(cfg, name):
            raise ValueError(f"{KEY}{name}: expected false (ssd-toolkit-guidance: {why}), got {getattr(cfg, name)!r}")
    if cfg.weighting_strategy not in WEIGHTINGS:
        raise ValueError(
            f"{KEY}weighting_strategy: expected one of {WEIGHTINGS}, got {cfg.weighting_strategy!r}"
            f"{did_you_mean(cfg.weighting_strategy, WEIGHTINGS)}"
        )
    if not str(cfg.loss_key).startswith("loss_") or cfg.loss_key == "loss_":
        raise ValueError(
            f"{KEY}loss_key: expected 'loss_<name>' (systems weight it by lambda_<name>), got {cfg.loss_key!r}"
        )
    if cfg.parity not in PARITY_VALUES:
        raise ValueError(f"{KEY}parity: expected 'auto', true or false, got {cfg.parity!r}")
    check_step_percents(cfg)
    if cfg.grad_clip is not None:
        name = f"{KEY}grad_clip"
        check_schedule(name, cfg.grad_clip)
        if not all(v > 0 for v in schedule_values(name, cfg.grad_clip)):
            raise ValueError(f"{name}: expected None or clip values > 0 (each entry is clamped to [-v, v]), got {cfg.grad_clip!r}")
    check_guidance_scale(cfg.guidance_scale)
    _check_integer("trainer_max_steps", cfg.trainer_max_steps)
    if cfg.sqrt_anneal and cfg.trainer_max_steps < 1:
        raise ValueError(f"{KEY}trainer_max_steps: expected an integer >= 1 with sqrt_anneal (the step is divided by it), "
                         f"got {cfg.trainer_max_steps!r}")


def check_step_percents(cfg):
    """Each step percent (a number or schedule) stays in [0, 1) so that ``int(T * value)`` is a
    timestep of a ``T``-step model, and min <= max at every milestone of either schedule."""
    names = (f"{KEY}min_step_percent", f"{KEY}max_step_percent")
    values = (cfg.min_step_percent, cfg.max_step_percent)
    for name, value in zip(names, values):
        check_schedule(name, value)
        if not all(0 <= v < 1 for v in schedule_values(name, value)):
            raise ValueError(f"{name}: expected values in [0, 1) (t = int(T * value) is a timestep below T), got {value!r}"
                             f"{entries_note(value)}")
    steps = sorted({0, *schedule_steps(names[0], values[0]), *schedule_steps(names[1], values[1])})
    for step in [*steps, steps[-1] + 1]:  # every milestone, and after the last (held values)
        lo, hi = (scheduled_value(n, v, step, step) for n, v in zip(names, values))
        if lo > hi:
            raise ValueError(
                f"{names[0]}: expected at most {names[1]} at every step, got {lo!r} > {hi!r} at step {step} "
                f"({values[0]!r} and {values[1]!r})"
            )


def check_guidance_scale(value):
    """None (threestudio's 100 for SDS) or a finite number >= 0."""
    name = f"{KEY}guidance_scale"
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number >= 0, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0 (a CFG scale), got {value!r}")


def _check_integer(field_name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{KEY}{field_name}: expected an integer, got {value!r}")


def parity_on(cfg, estimator_name):
    """Whether the step draws as threestudio's own guidance (``parity``; "auto": SDS only)."""
    return estimator_name == "sds" if cfg.parity == "auto" else bool(cfg.parity)


def estimator_arguments(cfg):
    """``(name, params)`` for ``ssd_toolkit.get_estimator`` from the config: threestudio's
    ``guidance_scale`` is SDS's (100), so only SDS takes it, with threestudio's CFG form;
    given for another estimator, it is ignored with one ``UserWarning`` saying why.

    The estimator is built once here, so that a bad name or argument fails before the
    networks load, naming ``system.guidance.estimator`` / ``estimator_params``.
    """
    import dataclasses  # noqa: PLC0415

    import ssd_toolkit  # noqa: PLC0415
    from ssd_toolkit.integrations.guidance.estimator_choice import (  # noqa: PLC0415
        canonical_name,
        estimator_params,
        warn_if_scale_ignored,
    )

    name = canonical_name(cfg.estimator)
    known = ssd_toolkit.list_estimators()
    if name not in known:
        raise ValueError(f"{KEY}estimator: expected one of {known}, got {cfg.estimator!r}{did_you_mean(name, known)}")
    given = cfg.estimator_params if cfg.estimator_params is not None else {}
    if not hasattr(given, "keys"):
        raise TypeError(f"{KEY}estimator_params: expected a mapping of {name}'s arguments, got {given!r}")
    given = dict(given)
    fields = [f.name for f in dataclasses.fields(ssd_toolkit.get_estimator(name))]
    for key in given:
        if key not in fields:
            raise ValueError(
                f"{KEY}estimator_params: {name} takes {fields}, got {key!r}{did_you_mean(key, fields)}"
            )
    warn_if_scale_ignored(name, cfg.guidance_scale, f"{KEY}guidance_scale", SCALE_TAKERS, given)
    if name == "sds":
        given = {"cfg": "threestudio", **given}
    scale = SDS_GUIDANCE_SCALE if cfg.guidance_scale is None else cfg.guidance_scale
    params = estimator_params(name, given, guidance_scale=scale, scale_takers=SCALE_TAKERS)
    try:
        ssd_toolkit.get_estimator(name, **params)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{KEY}estimator_params: {exc}") from None
    return name, params
