"""ControlNet + Stable Diffusion guidance with any ``ssd_toolkit`` estimator (SSD by default).

One step (``ControlNetGuidance.guide``): draw noise, noise the latents at per-sample
timesteps, run ONE batched ControlNet + UNet call that stacks every branch the estimator
declares (``[uncond; cond]`` for SSD/SDS/CSD, plus ``negative`` where asked) with the
condition images repeated to the whole stacked batch, apply the estimator in float32,
multiply by ``w(t)``. Unlike DreamWaltz, any batch size works, and t, the condition image
and the text (view prompt) may all differ per sample.

Every host builds on this class: the avatar app, the DreamWaltz drop-in
(``ssd_toolkit.integrations.dreamwaltz``) and the threestudio guidance; see
docs/integrations/dreamwaltz.md and docs/architecture.md.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ssd_toolkit.diagnostics import step_diagnostics
from ssd_toolkit.losses import normalize_per_sample, sds_loss

from . import estimator_choice
from .cfg_schedule import check_guidance_adjust, guidance_scale_at
from .models import DEFAULT_CONTROLNET, DEFAULT_SD_MODEL, load_models
from .prompts import warn_if_truncated

BRANCH_ORDER = ("uncond", "cond", "negative")


@dataclass
class GuidanceOutput:
    """What one guidance step produced (all tensors detached unless stated).

    Attributes:
        gradients: ``w(t) * E`` (unit-normalised per sample with ``grad_norm``),
            ``[B, 4, h, w]`` in the latents' dtype; the gradient to apply to the latents
            (``latents.backward(gradient=gradients)``).
        loss: float32 scalar ``0.5 * ||x - stopgrad(x - g)||^2 / B``
            (``ssd_toolkit.losses.sds_loss``) attached to the latents' graph, so
            ``loss.backward()`` applies exactly ``gradients / B`` (threestudio's
            convention); its value ``0.5 ||g||^2 / B`` is for logging only.
        t: timesteps ``[B]`` (int64).
        noise: the noise ``[B, 4, h, w]`` (float32) that made ``latents_noisy``; for ISM,
            its target ``eps_uncond(x_s, s)`` (``latents_noisy`` then comes from DDIM inversion).
        latents_noisy: ``x_t`` ``[B, 4, h, w]`` (float32).
        eps_cond, eps_uncond, eps_negative: the UNet outputs (float32) for the branches
            the estimator asked for, None for the others.
        estimate: the estimator output ``E`` before weighting (float32).
        weights: ``w(t)`` ``[B]`` (float32).
        diagnostics: per-step logging dict of plain floats:
            ``ssd_toolkit.step_diagnostics`` (t stats, weighted ``grad_norm`` mean and per
            sample, SSD's ``r``, ``h_norm``, ``scale``, ``frac_mode_seeking`` ...) plus
            ``eps_<branch>_norm`` per UNet branch, ``grad_norm_applied`` (after
            ``grad_norm`` normalisation), ``nonfinite`` (count of non-finite gradient
            entries; gradients are never zeroed here) and ``unet_calls`` (batched network
            calls this step: 1, plus ISM's inversion calls).
    """

    gradients: Any
    loss: Any
    t: Any
    noise: Any
    latents_noisy: Any
    eps_cond: Any
    eps_uncond: Any
    eps_negative: Any
    estimate: Any
    weights: Any
    diagnostics: dict = field(default_factory=dict)


@dataclass
class StepInputs:
    """One ``prepare_step``: the drawn t and noise, and the stacked network inputs.

    ``unet_*`` stack the estimator's branches in ``BRANCH_ORDER`` (``k`` of them, batch
    ``k * B``). ``predict_noise`` is per-sample, so several ``StepInputs`` (one per avatar,
    with their own prompts, conditions and t) may be concatenated along the batch into one
    call and its output split back, in the same order, for each ``finish_step``.
    """

    latents: Any
    t: Any
    noise: Any
    latents_noisy: Any
    branches: list
    unet_latents: Any
    unet_t: Any
    unet_text: Any
    unet_conditions: Any
    estimator: Any = None  # the estimator at this step (``estimator_at``)
    inversion_calls: int = 0  # network calls a denoiser-aware estimator (ISM) made here


def _torch():
    import torch  # noqa: PLC0415 - optional dependency, loaded with the models

    return torch


def _accepts(fn, name):
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return False


def _resolve_estimator(estimator, estimator_params, guidance_scale):
    import ssd_toolkit  # noqa: PLC0415

    if not isinstance(estimator, str):
        if not callable(estimator) or not hasattr(estimator, "branches"):
            raise TypeError(
                f"estimator: expected a name or an ssd_toolkit estimator (callable with .branches), got {estimator!r}"
            )
        return estimator
    params = estimator_choice.estimator_params(estimator, estimator_params, guidance_scale=guidance_scale,
                                               scale_takers=("sds",))
    # CUDA data without the CUDA kernel: estimate's own policy (dispatch.kernel_or_fallback) warns once
    # and runs PyTorch eager ops on the GPU.
    return ssd_toolkit.get_estimator(estimator, **params)


def _resolve_t_sampler(t_sampler, seed, params):
    if not isinstance(t_sampler, str):
        if not hasattr(t_sampler, "sample"):
            raise TypeError(f"t_sampler: expected a name or an object with .sample(batch_size, step), got {t_sampler!r}")
        return t_sampler
    from ssd_toolkit import samplers  # noqa: PLC0415

    return samplers.get_sampler(t_sampler, seed=seed, **(params or {}))


def _resolve_weighting(weighting):
    if not isinstance(weighting, str):
        if not callable(weighting):
            raise TypeError(f"weighting: expected a name or a callable w(t, alphas_cumprod), got {weighting!r}")
        return weighting
    from ssd_toolkit.weighting import get_weighting  # noqa: PLC0415

    return get_weighting(weighting)


def describe(x):
    """``"shape [2, 4, 8, 8]"`` for an array, else the type's name: the "got" of an error."""
    return f"shape {list(x.shape)}" if hasattr(x, "shape") else type(x).__name__


def _check_batch(name, x, B, ndim):
    """``x`` with its batch repeated to ``B`` when it is 1; errors name the argument."""
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dims, got shape {list(x.shape)}")
    if x.shape[0] == B:
        return x
    if x.shape[0] == 1:
        return x.expand(B, *x.shape[1:])
    raise ValueError(f"{name}: expected batch {B} (or 1, repeated), got shape {list(x.shape)}")


def _per_net(conditions, fn):
    """``fn`` on one condition tensor, or on each of a list (one per ControlNet); None stays None."""
    if conditions is None:
        return None
    if isinstance(conditions, (list, tuple)):
        return [fn(c) for c in conditions]
    return fn(conditions)


def _scales(controlnet, scale):
    """``controlnet_conditioning_scale`` as the ControlNet takes it: a float, or one float per
    net of a ``MultiControlNetModel`` (a single float is repeated)."""
    nets = getattr(controlnet, "nets", None)
    if nets is None:
        if isinstance(scale, (list, tuple)):
            raise ValueError(f"controlnet_conditioning_scale: expected a float (one ControlNet), got {list(scale)}")
        return float(scale)
    scales = list(scale) if isinstance(scale, (list, tuple)) else [scale] * len(nets)
    if len(scales) != len(nets):
        raise ValueError(
            f"controlnet_conditioning_scale: expected a float or {len(nets)} floats (one per ControlNet), got {scales}"
        )
    return [float(x) for x in scales]


def _to_condition_tensor(item, size, device, name="cond_inputs"):
    """A PIL image, a list of them, an HWC uint8 array or a [N,3,H,W]/[3,H,W] tensor in
    [0, 1] -> float32 ``[N, 3, size[0], size[1]]`` in [0, 1] on ``device``."""
    torch = _torch()
    if isinstance(item, (list, tuple)):
        return torch.cat([_to_condition_tensor(x, size, device, name) for x in item], dim=0)
    if not isinstance(item, torch.Tensor):
        arr = np.asarray(item.convert("RGB") if hasattr(item, "convert") else item)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"{name}: expected an RGB image (H, W, 3), got shape {list(arr.shape)}")
        scale = 255.0 if arr.dtype == np.uint8 else 1.0
        item = torch.from_numpy(arr.astype(np.float32) / scale).permute(2, 0, 1)
    if item.ndim == 3:
        item = item[None]
    if item.ndim != 4 or item.shape[1] != 3:
        raise ValueError(f"{name}: expected [N, 3, H, W] or [3, H, W] images, got shape {list(item.shape)}")
    item = item.to(device=device, dtype=torch.float32)
    if tuple(item.shape[-2:]) != tuple(size):
        item = torch.nn.functional.interpolate(item, size=size, mode="bilinear", align_corners=False)
    return item


class ControlNetGuidance:
    """Score-distillation guidance from SD + ControlNet with a selectable estimator.

    Args:
        models: ``models.GuidanceModels`` (``load_models`` or your own networks).
        estimator: ``ssd_toolkit`` estimator name ("ssd", "sds", "csd", ...) or an
            estimator object (callable with ``.branches``).
        estimator_params: keyword arguments of the estimator; default ``{"M": 200}`` for
            SSD and ``{}`` otherwise. For "sds" ``guidance_scale`` is filled in when absent.
            On a CUDA device without ssd_toolkit's CUDA kernel, SSD gets
            ``backend="torch"`` (with a warning) unless a backend is given.
        weighting: ``w(t)`` name ("sjc"/"uniform" = 1, DreamWaltz's default;
            "sds"/"dreamfusion"; "fantasia3d"/"latent-nerf") or a callable.
        t_sampler: timestep sampler name ("uniform" t in [20, 980], "paper",
            "piecewise-linear", "dreamtime") or an object with ``.sample(B, step)``.
        t_sampler_params: keyword arguments of the named sampler.
        guidance_scale: CFG scale for SDS (standard convention ``eps_u + s (eps_c - eps_u)``)
            and for the ``latents_denoise`` preview; SSD and CSD do not use it.
        negative_prompt: the prompt of the "uncond" text in ``encode_prompts``-based calls
            (empty by default, as DreamWaltz), and of the "negative" branch when an
            estimator declares one.
        seed: seeds the noise generator and the named timestep sampler.
        grad_norm: DreamWaltz's ``guide.grad_norm``: replace each sample's gradient by
            its unit-L2 direction. Off by default; it erases SSD's rescaling to ``||h||``
            and w(t), so turning it on with SSD warns.
        source_prompt: SDS-Bridge's source prompt, the text of its "negative" slot (None:
            ``negative_prompt``); e.g. ``prompt + ", " + SDS_BRIDGE_SOURCE_MODIFIER``.
        gradient_options: ``ssd_toolkit.gradient_options.GradientOptions`` or a dict of
            its fields (DreamWaltz-G's ``grad_latent_clip``, ``grad_latent_clip_scale``,
            ``grad_latent_norm``, ``grad_latent_nan_to_num``; threestudio's ``grad_clip``),
            applied to ``w(t) E`` after ``grad_norm``.
        guidance_adjust: DreamWaltz's CFG-scale schedule for estimators with a
            ``guidance_scale`` ("constant", "uniform", "linear", "linear_reverse";
            ``guide()`` needs ``max_iteration`` for the last two).
    """

    def __init__(
        self,
        models,
        estimator="ssd",
        estimator_params=None,
        weighting="sjc",
        t_sampler="uniform",
        t_sampler_params=None,
        guidance_scale=50.0,
        negative_prompt="",
        seed=0,
        grad_norm=False,
        source_prompt=None,
        gradient_options=None,
        guidance_adjust="constant",
    ):
        from ssd_toolkit.gradient_options import GradientOptions  # noqa: PLC0415

        torch = _torch()
        self.models = models
        self.device = torch.device(models.device)
        self.dtype = models.dtype
        self.guidance_scale = float(guidance_scale)
        self.negative_prompt = str(negative_prompt)
        self.source_prompt = None if source_prompt is None else str(source_prompt)
        if isinstance(gradient_options, dict):
            gradient_options = GradientOptions(**gradient_options)
        if gradient_options is not None and not isinstance(gradient_options, GradientOptions):
            raise TypeError(f"gradient_options: expected a GradientOptions or a dict, got {gradient_options!r}")
        self.gradient_options = gradient_options
        self.guidance_adjust = check_guidance_adjust(guidance_adjust)
        self.estimator = _resolve_estimator(estimator, estimator_params, self.guidance_scale)
        unknown = set(self.estimator.branches) - set(BRANCH_ORDER)
        if not set(self.estimator.branches) or unknown:
            raise ValueError(
                f"estimator: expected branches among {BRANCH_ORDER}, got {tuple(self.estimator.branches)}"
            )
        self.weighting = _resolve_weighting(weighting)
        self.grad_norm = bool(grad_norm)
        estimator_choice.warn_if_grad_norm_erases(getattr(self.estimator, "name", ""), self.grad_norm)
        self.t_sampler = _resolve_t_sampler(t_sampler, seed, t_sampler_params)
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))
        abar = models.scheduler.alphas_cumprod
        self.alphas_cumprod = torch.as_tensor(abar, dtype=torch.float32).to(self.device)
        self.num_train_timesteps = int(self.alphas_cumprod.shape[0])
        self._prompt_cache = {}
        self._truncation_warned = set()  # limits already warned about (once per guidance)
        self._returns_stats = _accepts(self.estimator.__call__, "return_stats")

    # ----------------------------------------------------------------- encoders

    @property
    def latent_size(self):
        """The UNet's native latent side (64 for SD 1.5, 8 for the tiny pipeline)."""
        return int(self.models.unet.config.sample_size)

    @property
    def vae_scale_factor(self):
        return 2 ** (len(self.models.vae.config.block_out_channels) - 1)

    def encode_prompts(self, prompts):
        """Text embeddings ``[len(prompts), 77, D]`` in the models' dtype; cached per string.

        Args:
            prompts: a list of strings (a single string is one prompt).
        """
        torch = _torch()
        if isinstance(prompts, str):
            prompts = [prompts]
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            tok = self.models.tokenizer
            warn_if_truncated(tok, missing, self._truncation_warned)
            ids = tok(
                missing, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
            ).input_ids.to(self.device)
            with torch.no_grad():
                emb = self.models.text_encoder(ids)[0]
            for p, e in zip(missing, emb):
                self._prompt_cache[p] = e
        return torch.stack([self._prompt_cache[p] for p in prompts], dim=0)

    def encode_rgb(self, images):
        """VAE latents of RGB images, in the graph (gradients flow back to ``images``).

        Args:
            images: ``[B, 3, H, W]`` float in [0, 1]; resized (bilinear) to the VAE's
                ``sample_size`` (512 for SD 1.5, 64 for the tiny pipeline).

        Returns:
            ``latent_dist.sample() * scaling_factor`` (0.18215 for SD 1.5), ``[B, 4, h, w]``
            in the models' dtype.
        """
        torch = _torch()
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected a [B, 3, H, W] tensor in [0, 1], got {describe(images)}")
        vae = self.models.vae
        side = int(vae.config.sample_size)
        x = images.to(device=self.device, dtype=torch.float32)
        if tuple(x.shape[-2:]) != (side, side):
            x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        x = (2.0 * x - 1.0).to(self.dtype)
        posterior = vae.encode(x).latent_dist
        eps = torch.randn(posterior.mean.shape, generator=self.generator, dtype=torch.float32).to(self.device)
        sample = posterior.mean + posterior.std * eps.to(posterior.mean.dtype)  # sample(), seeded
        return sample * vae.config.scaling_factor

    # ------------------------------------------------------------------ one step

    def estimator_at(self, train_step, max_iteration=None, guidance_scale=None):
        """The estimator for one step: annealed (``at_step``) and, for estimators with a
        ``guidance_scale``, at ``guidance_scale`` when given (a host that draws its own
        schedule, as the DreamWaltz drop-in), else at ``guidance_adjust``'s scale."""
        from dataclasses import replace  # noqa: PLC0415

        from ssd_toolkit.estimators import at_step  # noqa: PLC0415

        est = at_step(self.estimator, train_step, max_iteration)
        if guidance_scale is not None and hasattr(est, "guidance_scale"):
            return replace(est, guidance_scale=float(guidance_scale))
        if self.guidance_adjust != "constant" and hasattr(est, "guidance_scale"):
            if max_iteration is None and self.guidance_adjust != "uniform":
                raise ValueError(
                    f"max_iteration: guidance_adjust={self.guidance_adjust!r} needs the run length, got None"
                )
            scale = guidance_scale_at(self.guidance_adjust, est.guidance_scale, train_step, max_iteration)
            est = replace(est, guidance_scale=scale)
        return est

    def sample_timesteps(self, batch_size, train_step=0):
        """Per-sample timesteps ``[batch_size]`` (int64, on the models' device) from the sampler."""
        torch = _torch()
        t = self.t_sampler.sample(int(batch_size), int(train_step))
        return torch.as_tensor(t, dtype=torch.long).to(self.device)

    def _timesteps(self, t, B):
        """A caller's ``t`` (a scalar or ``[B]``) as int64 ``[B]`` on the models' device; the
        integer and range checks are the core's one validator of schedule indices."""
        from ssd_toolkit.frameworks.timestep_checks import timestep_indices  # noqa: PLC0415

        torch = _torch()
        idx = timestep_indices(t, self.num_train_timesteps).reshape(-1)
        if idx.size not in (1, B):
            raise ValueError(f"t: expected a scalar or {B} timesteps, got {idx.size}")
        return torch.from_numpy(idx).to(self.device).expand(B).contiguous()

    def _conditions(self, conditions, B, latents):
        """``conditions`` as guide() documents it -> float32 ``[B, 3, 8h, 8w]`` (a list of
        them for a ``MultiControlNetModel``), or None."""
        if conditions is None:
            return None
        side = (latents.shape[-2] * self.vae_scale_factor, latents.shape[-1] * self.vae_scale_factor)
        nets = getattr(self.models.controlnet, "nets", None)
        if nets is None and isinstance(conditions, (list, tuple)):
            raise ValueError(f"conditions: expected one tensor (one ControlNet is loaded), got a list of {len(conditions)}")
        if nets is None:
            return _to_condition_tensor(_check_batch("conditions", conditions, B, 4), side, self.device, "conditions")
        if not isinstance(conditions, (list, tuple)) or len(conditions) != len(nets):
            got = f"a list of {len(conditions)}" if isinstance(conditions, (list, tuple)) else describe(conditions)
            raise ValueError(f"conditions: expected a list of {len(nets)} tensors (one per ControlNet), got {got}")
        return [
            _to_condition_tensor(_check_batch(f"conditions[{i}]", c, B, 4), side, self.device, f"conditions[{i}]")
            for i, c in enumerate(conditions)
        ]

    def predict_noise(self, latents_noisy, t, text_embeddings, conditions=None, controlnet_conditioning_scale=1.0,
                      cross_attention_kwargs=None):
        """One ControlNet + UNet call (no grad) on an already-stacked batch.

        Args:
            latents_noisy: ``[K, 4, h, w]``.
            t: ``[K]`` int64.
            text_embeddings: ``[K, 77, D]``.
            conditions: ``[K, 3, 8h, 8w]`` in [0, 1] (a list of them, one per net, for a
                ``MultiControlNetModel``), or None to skip the ControlNet.
            controlnet_conditioning_scale: multiplies the ControlNet residuals (a float, or
                one per net for a ``MultiControlNetModel``).
            cross_attention_kwargs: passed to both networks.

        Returns:
            ``eps`` ``[K, 4, h, w]`` float32.
        """
        torch = _torch()
        m = self.models
        x = latents_noisy.to(self.dtype)
        text = text_embeddings.to(device=self.device, dtype=self.dtype)
        extra = {}
        with torch.no_grad():
            if conditions is not None and m.controlnet is not None:
                down, mid = m.controlnet(
                    x, t, encoder_hidden_states=text, controlnet_cond=_per_net(conditions, lambda c: c.to(self.dtype)),
                    conditioning_scale=_scales(m.controlnet, controlnet_conditioning_scale),
                    cross_attention_kwargs=cross_attention_kwargs, return_dict=False,
                )
                extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
            eps = m.unet(x, t, encoder_hidden_states=text, cross_attention_kwargs=cross_attention_kwargs,
                         return_dict=False, **extra)[0]
        return eps.float()

    def guide(
        self,
        latents,
        text_cond,
        text_uncond=None,
        conditions=None,
        train_step=0,
        max_iteration=None,
        t=None,
        controlnet_conditioning_scale=1.0,
        text_negative=None,
        noise=None,
        cross_attention_kwargs=None,
        guidance_scale=None,
    ):
        """One guidance step: the gradient of the distillation loss w.r.t. ``latents``.

        Args:
            latents: ``[B, 4, h, w]`` (may require grad; only read here).
            text_cond: ``[B, 77, D]`` (or ``[1, 77, D]``, repeated) conditional embeddings,
                e.g. ``encode_prompts(view_prompts(text, polar, azimuth))``.
            text_uncond: ``[B or 1, 77, D]``; required when the estimator has an "uncond"
                branch (SSD, SDS, CSD).
            conditions: ``[B or 1, 3, H, W]`` float in [0, 1] (skeleton images), resized to
                ``8h x 8w``; with a ``MultiControlNetModel`` a list of such tensors, one per
                net in its order; None runs the UNet without ControlNet.
            train_step: the training step (drives the timestep sampler, the annealed
                estimators' ``at_step`` and ``guidance_adjust``).
            max_iteration: the run length: annealed CSD's progress ``train_step /
                max_iteration`` and the linear ``guidance_adjust`` schedules (the named
                timestep samplers take their horizon at construction).
            t: None to sample; else a scalar or ``[B]`` integer timesteps.
            controlnet_conditioning_scale: ControlNet residual scale (a float, or a list
                with one per net of a ``MultiControlNetModel``).
            text_negative: ``[B or 1, 77, D]``; required when the estimator has a
                "negative" branch (defaults to ``negative_prompt``'s embedding).
            noise: None to draw (seeded generator); else ``[B, 4, h, w]``.
            cross_attention_kwargs: passed to the UNet and ControlNet.
            guidance_scale: this step's CFG scale for estimators that have one, instead of
                ``guidance_adjust``'s (``estimator_at``); None: the schedule's.

        Returns:
            ``GuidanceOutput``.

        Raises:
            TypeError / ValueError: malformed inputs; the message names the argument.
        """
        prep = self.prepare_step(latents, text_cond, text_uncond, conditions, train_step, t, text_negative, noise,
                                 max_iteration, guidance_scale)
        eps = self.predict_noise(prep.unet_latents, prep.unet_t, prep.unet_text, prep.unet_conditions,
                                 controlnet_conditioning_scale, cross_attention_kwargs)
        return self.finish_step(prep, eps)

    def prepare_step(self, latents, text_cond, text_uncond=None, conditions=None, train_step=0, t=None,
                     text_negative=None, noise=None, max_iteration=None, guidance_scale=None):
        """``guide``'s work before the networks: check the inputs, draw t and the noise, noise
        the latents and stack the branches. ``guide`` = ``prepare_step`` -> ``predict_noise``
        -> ``finish_step``; a batch trainer concatenates several ``StepInputs`` into one
        ``predict_noise`` call (see ``StepInputs``). Arguments as ``guide``'s.
        """
        torch = _torch()
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
            raise ValueError(f"latents: expected a [B, C, h, w] tensor, got {describe(latents)}")
        expected_channels = int(self.models.unet.config.in_channels)
        if latents.shape[1] != expected_channels:
            raise ValueError(f"latents: expected {expected_channels} channels, got shape {list(latents.shape)}")
        B = int(latents.shape[0])
        estimator = self.estimator_at(train_step, max_iteration, guidance_scale)
        branches = [b for b in BRANCH_ORDER if b in estimator.branches]
        texts = {"cond": text_cond, "uncond": text_uncond, "negative": text_negative}
        if "negative" in branches and text_negative is None:
            texts["negative"] = self.encode_prompts([self.source_prompt or self.negative_prompt])
        stacked_text = []
        for b in branches:
            if texts[b] is None:
                raise ValueError(f"text_{b}: estimator {estimator!r} needs the {b!r} branch, got None")
            stacked_text.append(_check_batch(f"text_{b}", texts[b], B, 3))
        t = self.sample_timesteps(B, train_step) if t is None else self._timesteps(t, B)
        if noise is None:
            noise = torch.randn(latents.shape, generator=self.generator, dtype=torch.float32).to(self.device)
        else:
            noise = _check_batch("noise", noise, B, 4).to(device=self.device, dtype=torch.float32)
            if noise.shape != latents.shape:
                raise ValueError(f"noise: expected shape {list(latents.shape)}, got {list(noise.shape)}")
        x0 = latents.detach().to(device=self.device, dtype=torch.float32)
        inversion_calls = 0
        if getattr(estimator, "needs_denoiser", False):
            # ISM: x_t by DDIM inversion with the plain UNet and the uncond text (as
            # DreamWaltz-G and LucidDreamer); its target takes the noise slot.
            uncond = stacked_text[branches.index("uncond")]
            latents_noisy, noise, inversion_calls = estimator.noisy_input(
                lambda x, tt: self.predict_noise(x, tt, uncond), x0, noise, t, self.alphas_cumprod
            )
        else:
            abar = self.alphas_cumprod[t].view(B, 1, 1, 1)
            latents_noisy = abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise
        conditions = self._conditions(conditions, B, latents)
        k = len(branches)
        return StepInputs(
            latents=latents, t=t, noise=noise, latents_noisy=latents_noisy, branches=branches,
            unet_latents=latents_noisy.repeat(k, 1, 1, 1), unet_t=t.repeat(k), unet_text=torch.cat(stacked_text, dim=0),
            unet_conditions=_per_net(conditions, lambda c: c.repeat(k, 1, 1, 1)), estimator=estimator,
            inversion_calls=inversion_calls,
        )

    def finish_step(self, prep, eps):
        """``guide``'s work after the networks: the estimator, ``w(t)`` and the loss.

        Args:
            prep: ``StepInputs`` from ``prepare_step``.
            eps: ``predict_noise``'s output for ``prep``'s stacked inputs, ``[k * B, 4, h, w]``.

        Returns:
            ``GuidanceOutput``.
        """
        torch = _torch()
        latents, t, noise, latents_noisy, branches = prep.latents, prep.t, prep.noise, prep.latents_noisy, prep.branches
        B, k = int(latents.shape[0]), len(branches)
        estimator = prep.estimator or self.estimator
        outs = dict(zip(branches, eps.chunk(k, dim=0)))
        eps_cond = outs.get("cond")
        eps_uncond = outs.get("uncond", eps_cond)
        kwargs = {"eps_negative": outs["negative"]} if "negative" in outs else {}
        if self._returns_stats:
            E, stats = estimator(eps_cond, eps_uncond, noise, t, return_stats=True, **kwargs)
        else:
            E = estimator(eps_cond, eps_uncond, noise, t, **kwargs)
            stats = {"grad_norm": E.float().reshape(B, -1).double().norm(dim=1)}
        E = E.float()
        w = torch.as_tensor(self.weighting(t, self.alphas_cumprod), dtype=torch.float32, device=self.device)
        grad32 = w.view(B, 1, 1, 1) * E
        if self.grad_norm:
            grad32 = normalize_per_sample(grad32)
        if self.gradient_options is not None:
            grad32 = self.gradient_options(grad32)
        gradients = grad32.to(device=latents.device, dtype=latents.dtype)
        loss = sds_loss(latents, gradients)
        diagnostics = step_diagnostics(stats, t, w)
        diagnostics.update(_branch_diagnostics(outs, grad32))
        diagnostics["unet_calls"] = float(1 + prep.inversion_calls)  # batched network calls this step
        return GuidanceOutput(
            gradients=gradients,
            loss=loss,
            t=t,
            noise=noise,
            latents_noisy=latents_noisy,
            eps_cond=eps_cond,
            eps_uncond=outs.get("uncond"),
            eps_negative=outs.get("negative"),
            estimate=E,
            weights=w,
            diagnostics=diagnostics,
        )


def _branch_diagnostics(eps, gradients):
    """Batch-mean norms of each UNet branch and of the applied gradient; the count of its
    non-finite entries."""
    B = int(gradients.shape[0])
    out = {}
    for name, value in eps.items():
        out[f"eps_{name}_norm"] = float(value.reshape(B, -1).norm(dim=1).mean()) if B else float("nan")
    out["grad_norm_applied"] = float(gradients.reshape(B, -1).norm(dim=1).mean()) if B else float("nan")
    out["nonfinite"] = float((~_torch().isfinite(gradients)).sum())
    return out


def load_guidance(
    sd_model=DEFAULT_SD_MODEL,
    controlnet=DEFAULT_CONTROLNET,
    device="cpu",
    dtype="float32",
    estimator="ssd",
    estimator_params=None,
    weighting="sjc",
    t_sampler="uniform",
    guidance_scale=50.0,
    negative_prompt="",
    seed=0,
    t_sampler_params=None,
    grad_norm=False,
    **options,
):
    """``load_models`` + ``ControlNetGuidance`` in one call (see both for the arguments;
    ``options``: ``source_prompt``, ``gradient_options``, ``guidance_adjust``).

    ``estimator_params`` defaults to ``{"M": 200}`` for SSD.
    """
    models = load_models(sd_model, controlnet, device=device, dtype=dtype)
    return ControlNetGuidance(
        models,
        estimator=estimator,
        estimator_params=estimator_params,
        weighting=weighting,
        t_sampler=t_sampler,
        t_sampler_params=t_sampler_params,
        guidance_scale=guidance_scale,
        negative_prompt=negative_prompt,
        seed=seed,
        grad_norm=grad_norm,
        **options,
    )

