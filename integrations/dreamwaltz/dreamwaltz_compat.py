"""DreamWaltz's ``ControllableScoreDistillationSampling`` backed by ssd_toolkit: a drop-in.

In DreamWaltz's ``core/trainer.py`` replace the import of the class from
``core.diffusion.controlnet`` with ``from ssd_toolkit.integrations.dreamwaltz import
ControllableScoreDistillationSampling, register_guide_fields`` and call
``register_guide_fields()`` below it (it adds ``guide.estimator`` and the other fields to
DreamWaltz's ``GuideConfig``; see ``guide_config``). The trainer then runs unchanged with
SSD (or any estimator chosen by ``guide.estimator``; the text of a third branch, which
DreamWaltz's trainer does not pass, comes from ``guide.negative_prompt`` /
``guide.source_prompt``).
What DreamWaltz's trainer calls, with DreamWaltz's meaning (checked against DreamWaltz
commit ``DREAMWALTZ_COMMIT``):

- ``__init__(device, model_name, weight_mode, guide_cfg, condition_type=..., latent_mode=...,
  concept_name=..., guidance_scale=..., fp16=...)``; ``parameters()`` (an ``nn.Module``).
- ``get_text_embeds``, ``encode_images``, ``decode_latents``, ``prompt_to_img``,
  ``batched_prompt_to_img`` (a diffusers ``StableDiffusionPipeline``),
  ``batch_prompt_control_to_img`` (a diffusers ``StableDiffusionControlNetPipeline``).
- ``estimate(...)`` one guidance step; ``alphas``, ``betas``, ``alphas_cumprod``, ``scheduler``.

The guidance step itself is ``ssd_toolkit.integrations.guidance.ControlNetGuidance.guide``
(one batched ControlNet + UNet call, any batch size); this module adds DreamWaltz's
schedules, weighting names, ``grad_clip`` / ``grad_norm`` and its return dict. See
docs/integrations/dreamwaltz.md.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

import ssd_toolkit
from ssd_toolkit.integrations.guidance import estimator_choice
from ssd_toolkit.integrations.guidance.cfg_schedule import guidance_scale_at
from ssd_toolkit.integrations.guidance.controlnet import ControlNetGuidance, describe
from ssd_toolkit.integrations.guidance.models import (
    DEFAULT_CONTROLNET,
    DEFAULT_SD_MODEL,
    GuidanceModels,
    load_controlnet,
    load_models,
    load_sampling_scheduler,
)

from .guide_config import read_guide_cfg
from .timesteps import DreamWaltzTimesteps

DREAMWALTZ_COMMIT = "2a699b59fceb1db6d7f51a71defc8a47d2449a47"
# DreamWaltz's model_name values (core/diffusion/stable_diffusion.py) -> hub ids; the taken-down
# runwayml id is served under DEFAULT_SD_MODEL.
SD_MODEL_CARDS = {
    "v1.4": "CompVis/stable-diffusion-v1-4",
    "v1.5": DEFAULT_SD_MODEL,
    "runwayml/stable-diffusion-v1-5": DEFAULT_SD_MODEL,
    "v2.0b": "stabilityai/stable-diffusion-2-base",
    "v2.0": "stabilityai/stable-diffusion-2",
    "v2.1b": "stabilityai/stable-diffusion-2-1-base",
    "v2.1": "stabilityai/stable-diffusion-2-1",
}
# DreamWaltz's condition types (core/diffusion/controlnet.py MODEL_CARDS)
CONTROLNET_CARDS = {
    "pose": DEFAULT_CONTROLNET,
    "depth": "lllyasviel/sd-controlnet-depth",
    "canny": "lllyasviel/sd-controlnet-canny",
    "seg": "lllyasviel/sd-controlnet-seg",
    "normal": "lllyasviel/sd-controlnet-normal",
}
# guide.loss_type -> ssd_toolkit weighting (sjc-v2 is weight 1 on the CFG prediction itself)
WEIGHTINGS = {
    "sjc": "sjc",
    "sjc-v2": "sjc",
    "dreamfusion": "dreamfusion",
    "stable-dreamfusion": "dreamfusion",
    "latent-nerf": "latent-nerf",
}
DREAMWALTZ_T = 1000  # DreamWaltz's num_train_timesteps
DREAMWALTZ_KEYWORDS = ("condition_type", "latent_mode", "concept_name", "guidance_scale", "fp16")


def resolve_sd_model(model_name):
    """DreamWaltz's ``model_name`` ("v1.5", a hub id, or a local diffusers directory) -> the
    source ``load_models`` takes."""
    name = str(model_name)
    return SD_MODEL_CARDS.get(name, name)


def resolve_controlnet(sd_source, condition_type):
    """The ControlNet for one condition type: ``<sd dir>/controlnet_<type>`` or
    ``<sd dir>/controlnet`` when the SD model is a local directory holding one (the tiny
    pipeline does), else DreamWaltz's hub id for the type.

    Raises:
        ValueError: a condition type DreamWaltz has no ControlNet for.
    """
    if os.path.isdir(sd_source):
        for sub in (f"controlnet_{condition_type}", "controlnet"):
            if os.path.isdir(os.path.join(sd_source, sub)):
                return os.path.join(sd_source, sub)
    if condition_type not in CONTROLNET_CARDS:
        raise ValueError(
            f"condition_type: expected entries among {sorted(CONTROLNET_CARDS)} (prompt.smpl_prompt), "
            f"got {condition_type!r}"
        )
    return CONTROLNET_CARDS[condition_type]


def _estimator_choice(settings, guidance_scale):
    """(name, params) for ``ControlNetGuidance`` from ``guide.estimator`` / ``guide.ssd_M``
    and ``guide.loss_type``: ``ssd_M`` reaches every estimator with an ``M``, the CFG scale
    every one with a ``guidance_scale`` (DreamWaltz has one scale for all)."""
    try:
        params = estimator_choice.estimator_params(settings.estimator, M=settings.ssd_M, guidance_scale=guidance_scale)
    except ValueError:
        raise ValueError(
            f"guide.estimator: expected one of {ssd_toolkit.list_estimators()}, got {settings.estimator!r}"
        ) from None
    if settings.loss_type == "sjc-v2":
        if "variance_reduction" not in estimator_choice.estimator_fields(settings.estimator):
            raise ValueError(
                "guide.loss_type: 'sjc-v2' (the gradient is the CFG noise prediction itself) exists for "
                f"estimators without the noise term (sds, mode-seeking); got guide.estimator {settings.estimator!r}"
            )
        params["variance_reduction"] = False
    return settings.estimator, params


def third_branch_prompt(settings, estimator):
    """The text of ``estimator``'s "negative" branch, which DreamWaltz's trainer does not pass:
    SDS-Bridge's source prompt (``guide.source_prompt``, resolved by ``read_guide_cfg``),
    ``guide.negative_prompt`` for other estimators with that branch (NFSD, annealed CSD),
    None for estimators without it.

    Raises:
        ValueError: SDS-Bridge with neither ``guide.source_prompt`` nor ``guide.text``.
    """
    if getattr(estimator, "name", None) == "sds-bridge":
        if not settings.source_prompt:
            raise ValueError(
                "guide.source_prompt: sds-bridge needs a source prompt; set guide.source_prompt or guide.text, got ''"
            )
        return settings.source_prompt
    if "negative" not in estimator.branches:
        return None
    if not settings.negative_prompt:
        warnings.warn(
            f"{estimator.name}: guide.negative_prompt is empty, so the negative branch equals the null "
            "text and its (uncond - negative) term is 0; set guide.negative_prompt",
            UserWarning,
            stacklevel=2,
        )
    return settings.negative_prompt


def _pil_to_tensor(images, width, height):
    """PIL images -> float32 ``[N, 3, height, width]`` in [0, 1], Lanczos-resized as DreamWaltz."""
    from PIL import Image  # noqa: PLC0415 - diffusers depends on Pillow

    arrays = [np.asarray(im.convert("RGB").resize((width, height), resample=Image.Resampling.LANCZOS)) for im in images]
    return torch.from_numpy(np.stack(arrays).astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


class ControllableScoreDistillationSampling(torch.nn.Module):
    """DreamWaltz's guidance class (same constructor, methods and return values) with an
    ssd_toolkit estimator, SSD by default.

    Args:
        device: torch device of the networks.
        model_name: "v1.4"/"v1.5"/"v2.0b"/"v2.0"/"v2.1b"/"v2.1", a hub id (DreamWaltz's
            ``guide.diffusion_name``, "runwayml/stable-diffusion-v1-5") or a local
            diffusers directory; a local directory's ``controlnet_<type>/`` or
            ``controlnet/`` is used for the ControlNets (see ``resolve_controlnet``).
        weight_mode: ``guide.loss_type``: "sjc" (1), "dreamfusion"/"stable-dreamfusion"
            (1 - abar), "latent-nerf" (sqrt(abar)(1 - abar)), "sjc-v2" (the CFG noise
            prediction itself; SDS/mode-seeking only).
        guide_cfg: DreamWaltz's ``cfg.guide`` (None: GuideConfig's defaults). Read:
            guidance_adjust, min/max_timestep, time_sampling, time_prior, grad_clip,
            grad_norm, text (SDS-Bridge's default source prompt), and the added
            ``estimator`` (default "ssd"), ``ssd_M`` (200), ``negative_prompt`` ("": the
            negative branch of nfsd / csd-annealed) and ``source_prompt`` ("": ``text`` plus
            SDS-Bridge's failure-mode modifier). That text is encoded once here and repeated
            to each batch.
        condition_type: ControlNet condition types, e.g. ["pose"] or ["depth", "pose"]
            (a diffusers ``MultiControlNetModel`` in that order); a "a,b" string is split.
        latent_mode: ``estimate`` inputs are latents (True) or RGB in [0, 1] (False).
        concept_name: must be None (DreamWaltz's ControlNet guidance has no textual
            inversion either).
        guidance_scale: CFG scale (SDS estimator, ``latents_denoise`` and image sampling).
        fp16: half-precision networks (the estimator still runs in float32).

    Raises:
        TypeError: a keyword DreamWaltz's class does not take.
        ValueError: an unsupported option; the message names it.
        OSError: a model that cannot be loaded (hub ids need the cache when offline).
    """

    def __init__(self, device, model_name="v1.5", weight_mode="sjc", guide_cfg=None, condition_type=("pose",),
                 latent_mode=True, concept_name=None, guidance_scale=100.0, fp16=True, **kwargs):
        super().__init__()
        if kwargs:
            raise TypeError(
                f"ControllableScoreDistillationSampling: unexpected keyword arguments {sorted(kwargs)}; DreamWaltz's "
                f"are device, model_name, weight_mode, guide_cfg and {', '.join(DREAMWALTZ_KEYWORDS)}"
            )
        if concept_name is not None:
            raise ValueError(f"concept_name: textual-inversion concepts are unsupported (use None), got {concept_name!r}")
        if isinstance(condition_type, str):
            condition_type = condition_type.split(",")
        self.condition_type = [str(c).strip() for c in condition_type]
        if not self.condition_type:
            raise ValueError("condition_type: expected at least one condition type (prompt.smpl_prompt), got none")
        self.device = torch.device(device)
        self.latent_mode = bool(latent_mode)
        self.guidance_scale = float(guidance_scale)
        self.cfg = guide_cfg
        self.settings = read_guide_cfg(guide_cfg, weight_mode)
        self.weight_mode = self.settings.loss_type
        self.guidance_adjust = self.settings.guidance_adjust
        estimator, estimator_params = _estimator_choice(self.settings, self.guidance_scale)
        estimator_choice.warn_if_grad_norm_erases(
            estimator, self.settings.grad_norm, "guide.grad_norm=True (DreamWaltz's default; pass --guide.grad_norm False)"
        )
        s = self.settings
        timesteps = (s.time_sampling, s.min_timestep, s.max_timestep, s.time_prior)
        self.get_timestep = DreamWaltzTimesteps(*timesteps, DREAMWALTZ_T, self.device)  # checked before loading
        self._build_networks(resolve_sd_model(model_name), torch.float16 if fp16 else torch.float32)
        models = GuidanceModels(self.tokenizer, self.text_encoder, self.vae, self.unet, self.controlnet,
                                self._ddpm, self.device, self.vae.dtype)
        self.guidance = ControlNetGuidance(models, estimator=estimator, estimator_params=estimator_params,
                                           weighting=WEIGHTINGS[self.weight_mode], guidance_scale=self.guidance_scale)
        prompt = third_branch_prompt(self.settings, self.guidance.estimator)
        self.text_negative = None if prompt is None else self.guidance.encode_prompts([prompt])
        self.num_train_timesteps = int(self.guidance.num_train_timesteps)
        if self.num_train_timesteps != DREAMWALTZ_T:
            self.get_timestep = DreamWaltzTimesteps(*timesteps, self.num_train_timesteps, self.device)
        self.betas = torch.as_tensor(self.scheduler.betas, dtype=torch.float32).to(self.device)
        self.alphas = torch.as_tensor(self.scheduler.alphas, dtype=torch.float32).to(self.device)
        self.alphas_cumprod = torch.as_tensor(self.scheduler.alphas_cumprod, dtype=torch.float32).to(self.device)

    def _build_networks(self, sd_source, dtype):
        import diffusers  # noqa: PLC0415 - loaded by load_models already

        sources = [resolve_controlnet(sd_source, c) for c in self.condition_type]  # checked before any loading
        base = load_models(sd_source, None, device=self.device, dtype=dtype)
        nets = [load_controlnet(source, self.device, dtype) for source in sources]
        parts = {"vae": base.vae, "text_encoder": base.text_encoder, "tokenizer": base.tokenizer, "unet": base.unet,
                 "scheduler": load_sampling_scheduler(sd_source), "safety_checker": None,
                 "feature_extractor": None, "requires_safety_checker": False}
        # a list becomes a MultiControlNetModel, as in DreamWaltz
        self.pipe = diffusers.StableDiffusionControlNetPipeline(controlnet=nets, **parts)
        self.sd_pipe = diffusers.StableDiffusionPipeline(**parts)
        self._ddpm = base.scheduler
        self.tokenizer, self.scheduler = base.tokenizer, self.pipe.scheduler
        self.text_encoder, self.vae, self.unet = base.text_encoder, base.vae, base.unet
        self.controlnet = self.pipe.controlnet

    # ------------------------------------------------------------ text and images

    def get_text_embeds(self, prompt, concat=True):
        """Embeddings of ``prompt`` (a list of N strings) and of N empty strings:
        ``[2N, 77, D]`` as ``[uncond; cond]``, or the tuple ``(uncond, cond)`` with
        ``concat=False``."""
        if isinstance(prompt, str):
            prompt = [prompt]
        cond = self.guidance.encode_prompts(list(prompt))
        uncond = self.guidance.encode_prompts([""] * len(prompt))
        return torch.cat([uncond, cond]) if concat else (uncond, cond)

    def encode_images(self, images):
        """VAE latents ``sample() * scaling_factor`` of ``[B, 3, H, W]`` images in [0, 1],
        in the graph; the sample draws from torch's global generator, as DreamWaltz."""
        x = (2 * images - 1).to(self.vae.dtype)
        return self.vae.encode(x).latent_dist.sample() * self.vae.config.scaling_factor

    def decode_latents(self, latents, to_uint8=False, to_numpy=False):
        """``[B, 4, h, w]`` latents -> float32 images ``[B, 3, 8h, 8w]`` in [0, 1] (no grad);
        uint8 with ``to_uint8``; a NumPy ``[B, H, W, 3]`` array with ``to_numpy``."""
        with torch.no_grad():
            z = 1 / self.vae.config.scaling_factor * latents.to(self.vae.dtype)  # DreamWaltz's rounding
            imgs = (self.vae.decode(z).sample.float() / 2 + 0.5).clamp(0, 1)
        if to_uint8:
            imgs = (imgs * 255).clamp(0, 255).to(torch.uint8)
        if to_numpy:
            imgs = imgs.cpu().permute(0, 2, 3, 1).numpy()
        return imgs

    def prepare_image(self, image, width, height, batch_size, num_images_per_prompt, device, dtype):
        """DreamWaltz's condition preparation: PIL image(s) Lanczos-resized to
        ``width x height`` -> ``[N, 3, H, W]`` in [0, 1] (tensors are concatenated as
        given); a batch of 1 is repeated to ``batch_size``."""
        if not isinstance(image, torch.Tensor):
            items = [image] if hasattr(image, "convert") else list(image)
            if not items:
                raise ValueError("cond_inputs: expected an image or a list of images, got an empty list")
            if all(isinstance(x, torch.Tensor) for x in items):
                image = torch.cat([x if x.ndim == 4 else x[None] for x in items], dim=0)
            elif all(hasattr(x, "convert") for x in items):
                image = _pil_to_tensor(items, int(width), int(height))
            else:
                raise TypeError(f"cond_inputs: expected PIL images or tensors, got {[type(x).__name__ for x in items]}")
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"cond_inputs: expected [N, 3, H, W] images, got {describe(image)}")
        repeat = batch_size if image.shape[0] == 1 else num_images_per_prompt
        return image.repeat_interleave(int(repeat), dim=0).to(device=device, dtype=dtype)

    def _conditions(self, cond_inputs, batch_size, side):
        """One prepared condition per ControlNet, in ``condition_type`` order."""
        items = list(cond_inputs) if isinstance(cond_inputs, (list, tuple)) else [cond_inputs]
        if len(items) != len(self.condition_type):
            raise ValueError(
                f"cond_inputs: expected {len(self.condition_type)} conditions (one per condition_type "
                f"{self.condition_type}), got {len(items)}"
            )
        return [self.prepare_image(c, side, side, batch_size, 1, self.device, torch.float32) for c in items]

    # ----------------------------------------------------------- image sampling

    def prompt_to_img(self, prompts, height=512, width=512, num_inference_steps=50, guidance_scale=None,
                      latents=None):
        """Stable Diffusion samples (no ControlNet) through diffusers' ``StableDiffusionPipeline``
        and the checkpoint's scheduler: uint8 ``[N, height, width, 3]``.

        Args:
            prompts: a string, a list of N strings, or ``[2N, 77, D]`` embeddings as
                ``[uncond; cond]``.
            guidance_scale: None for the constructor's.
            latents: optional initial noise ``[N, 4, height/8, width/8]``.
        """
        text = prompts if isinstance(prompts, torch.Tensor) else self.get_text_embeds(prompts)
        if text.ndim != 3 or text.shape[0] % 2:
            raise ValueError(f"prompts: expected [2N, 77, D] embeddings as [uncond; cond], got {describe(text)}")
        uncond, cond = text.chunk(2)
        images = self.sd_pipe(
            prompt_embeds=cond.to(self.unet.dtype), negative_prompt_embeds=uncond.to(self.unet.dtype),
            height=height, width=width, num_inference_steps=num_inference_steps, latents=latents,
            guidance_scale=self.guidance_scale if guidance_scale is None else float(guidance_scale), output_type="np",
        ).images
        return (images * 255).round().astype("uint8")

    def batched_prompt_to_img(self, prompts, batch_size=4, **kwargs):
        """``prompt_to_img`` in chunks of ``batch_size`` prompts; ``prompts`` as there."""
        text = prompts if isinstance(prompts, torch.Tensor) else self.get_text_embeds(prompts)
        if text.ndim != 3 or text.shape[0] % 2:
            raise ValueError(f"prompts: expected [2N, 77, D] embeddings as [uncond; cond], got {describe(text)}")
        n = text.shape[0] // 2
        chunks = zip(torch.split(text[:n], batch_size), torch.split(text[n:], batch_size))
        return np.concatenate([self.prompt_to_img(torch.cat(pair), **kwargs) for pair in chunks])

    def batch_prompt_control_to_img(self, prompts, cond_inputs, height=512, width=512, num_inference_steps=50,
                                    guidance_scale=None, controlnet_conditioning_scale=1.0, dtype=torch.float):
        """ControlNet samples through diffusers' ``StableDiffusionControlNetPipeline``: uint8
        ``[N, height, width, 3]``.

        Args:
            prompts: a string or a list of N strings.
            cond_inputs: one condition per ``condition_type`` (PIL image(s) or tensors in
                [0, 1]).
            controlnet_conditioning_scale: a float or one per ControlNet.
            guidance_scale: None for the constructor's.
        """
        if isinstance(prompts, str):
            batch = 1
        elif isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, str) for p in prompts):
            batch, prompts = len(prompts), list(prompts)
        else:
            raise TypeError(f"prompts: expected a string or a list of strings, got {prompts!r}")
        items = list(cond_inputs) if isinstance(cond_inputs, (list, tuple)) else [cond_inputs]
        if len(items) != len(self.condition_type):
            raise ValueError(f"cond_inputs: expected {len(self.condition_type)} conditions, got {len(items)}")
        images = [self.prepare_image(c, width, height, batch, 1, self.device, dtype) for c in items]
        scale = controlnet_conditioning_scale
        scale = [float(x) for x in scale] if isinstance(scale, (list, tuple)) else [float(scale)] * len(images)
        out = self.pipe(
            prompts, image=images, height=height, width=width, num_inference_steps=num_inference_steps,
            guidance_scale=self.guidance_scale if guidance_scale is None else float(guidance_scale),
            controlnet_conditioning_scale=scale, output_type="np",
        ).images
        return (out * 255).round().astype("uint8")

    # ------------------------------------------------------------ one guidance step

    def get_guidance_scale(self, train_step, max_iteration):
        """The CFG scale at ``train_step`` (``guide.guidance_adjust``)."""
        return guidance_scale_at(self.guidance_adjust, self.guidance_scale, train_step, max_iteration)

    def add_noise(self, original_samples, noise, timesteps):
        """``sqrt(abar_t) x + sqrt(1 - abar_t) noise`` per sample."""
        abar = self.alphas_cumprod.to(original_samples.device)[timesteps.to(original_samples.device)]
        abar = abar.to(original_samples.dtype).view(-1, *([1] * (original_samples.ndim - 1)))
        return abar.sqrt() * original_samples + (1 - abar).sqrt() * noise

    def estimate(self, text_embeddings, inputs, train_step, max_iteration, cond_inputs=None,
                 controlnet_conditioning_scale=1.0, cross_attention_kwargs=None, backward=True):
        """One guidance step, DreamWaltz's call and return value, any batch size.

        Args:
            text_embeddings: ``[2N, 77, D]`` as ``[uncond; cond]`` (per-sample view prompts).
            inputs: latents ``[N, 4, h, w]`` (``latent_mode``) or RGB ``[N, 3, H, W]`` in
                [0, 1], resized to the VAE's input side and encoded in the graph.
            train_step, max_iteration: drive ``guide.time_sampling``,
                ``guide.guidance_adjust`` and the annealed estimators (csd-annealed's
                negative weight, sds-bridge's stage, ism's interval).
            cond_inputs: one condition per ``condition_type`` (PIL image(s) or
                ``[N or 1, 3, H, W]`` tensors in [0, 1]), resized to ``8h x 8w``; None runs
                the UNet without ControlNet (DreamWaltz raises there).
            controlnet_conditioning_scale: a float or one per ControlNet.
            cross_attention_kwargs: passed to the UNet and ControlNets.
            backward: ``latents.backward(gradient=gradients, retain_graph=True)`` here.

        Returns:
            dict: ``latents`` (in the graph), ``gradients`` (``w(t) E``, clamped to [-1, 1]
            with ``grad_clip``; ``E`` per-sample unit-normalised with ``grad_norm``, as
            DreamWaltz), ``noise_residual`` (the estimator output ``E``; for SDS
            ``eps_cfg - noise`` as DreamWaltz), ``latents_denoise`` (one DDPM reverse step
            ``(x_t - beta_t / sqrt(1 - abar_t) eps_cfg) / sqrt(alpha_t)``), ``t`` ``[N]``
            and ``diagnostics`` (``ssd_toolkit.integrations.guidance.controlnet.GuidanceOutput.diagnostics``).
        """
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4:
            raise ValueError(f"inputs: expected latents [N, 4, h, w] or RGB [N, 3, H, W], got {describe(inputs)}")
        channels = int(self.unet.config.in_channels) if self.latent_mode else 3
        if inputs.shape[1] != channels:
            what = "latents (latent_mode=True)" if self.latent_mode else "RGB images (latent_mode=False)"
            raise ValueError(f"inputs: expected {what} with {channels} channels, got shape {list(inputs.shape)}")
        B = int(inputs.shape[0])
        if not isinstance(text_embeddings, torch.Tensor) or text_embeddings.ndim != 3 or \
                text_embeddings.shape[0] not in (2, 2 * B):
            raise ValueError(
                f"text_embeddings: expected [2N, 77, D] = [{2 * B}, 77, D] as [uncond; cond], got {describe(text_embeddings)}"
            )
        scale = self.get_guidance_scale(train_step, max_iteration)  # draws in DreamWaltz's order
        t = self.get_timestep(B, train_step, max_iteration)
        if self.latent_mode:
            latents = inputs
        else:
            side = int(self.vae.config.sample_size)
            latents = self.encode_images(torch.nn.functional.interpolate(inputs, (side, side), mode="bilinear",
                                                                         align_corners=False))
        noise = torch.randn_like(latents)
        side = int(latents.shape[-1]) * self.guidance.vae_scale_factor
        conditions = None if cond_inputs is None else self._conditions(cond_inputs, B, side)
        uncond, cond = text_embeddings.chunk(2)
        negative = None if self.text_negative is None else self.text_negative.expand(B, -1, -1)
        out = self.guidance.guide(latents, cond, uncond, conditions, train_step, max_iteration, t=t, noise=noise,
                                  text_negative=negative, controlnet_conditioning_scale=controlnet_conditioning_scale,
                                  cross_attention_kwargs=cross_attention_kwargs, guidance_scale=scale)
        noise_residual = out.estimate - out.noise if self.weight_mode == "sjc-v2" else out.estimate
        gradients = out.gradients.float()
        if self.settings.grad_clip:
            gradients = gradients.clamp(-1, 1)
        if self.settings.grad_norm:
            gradients = torch.nn.functional.normalize(noise_residual, p=2, dim=(1, 2, 3))
        gradients = gradients.to(latents.dtype)
        eps_cfg = out.eps_cond if out.eps_uncond is None else out.eps_uncond + scale * (out.eps_cond - out.eps_uncond)
        view = (B, 1, 1, 1)
        latents_denoise = (out.latents_noisy - eps_cfg * (self.betas[t] / (1 - self.alphas_cumprod[t]).sqrt()).view(view)
                           ) / self.alphas[t].sqrt().view(view)
        if backward:
            latents.backward(gradient=gradients, retain_graph=True)
        return {
            "latents": latents,
            "latents_denoise": latents_denoise,
            "gradients": gradients,
            "noise_residual": noise_residual,
            "t": t,
            "diagnostics": out.diagnostics,
        }
