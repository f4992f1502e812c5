"""threestudio's guidance contract over ``ControlNetGuidance``, with no threestudio import.

``GuidanceAdapter`` holds everything a threestudio guidance does: ``configure`` (load the
networks), ``update_step`` (the t range and grad clip from the config's schedules, as
threestudio's ``StableDiffusionGuidance``), ``set_min_max_steps``, ``encode_images``,
``decode_latents`` and the call ``guidance(rgb, prompt_utils, elevation, azimuth,
camera_distances, rgb_as_latents=False, **batch)``. ``guidance.SSDToolkitGuidance`` is
the same class registered with threestudio; ``ThreestudioGuidance`` here builds it from a
dict without threestudio (tests, other trainers).

The call returns only what a system can ``self.log``: ``{loss_key: scalar loss,
"grad_norm": scalar, "min_step": int, "max_step": int}``. The per-step diagnostics dict
(SSD's ``r``, ``h_norm``, ``frac_mode_seeking``, t statistics ...) is ``last_diagnostics``,
the timesteps ``last_t`` and the whole step (noise, ``x_t``, UNet outputs, gradients) the
``GuidanceOutput`` ``last_output``.

Text: threestudio's prompt processor gives ``[cond; uncond]``, its "uncond" being the
negative prompt's embedding (empty by default); it is the CFG uncond of SSD/SDS/CSD, as in
threestudio. An estimator with a "negative" branch (NFSD) gets the null text ``""`` as
uncond (encoded here once) and the negative prompt as negative, so ``u - neg`` is real.

Parity (``config.GuidanceConfig.parity``; on by default for SDS): the latents, ``t`` and
the noise come from torch's global generator in threestudio's order (VAE sample, randint,
randn_like) at its fixed 512x512 / 64x64 sizes, so that threestudio's own seeding decides
the run; otherwise from this guidance's seeded generators at the UNet's native size.
"""

from __future__ import annotations

import warnings
from dataclasses import fields

from ssd_toolkit.integrations.guidance.controlnet import describe
from ssd_toolkit.losses import sds_loss

from .config import KEY, GuidanceConfig, check_config, did_you_mean, estimator_arguments, parity_on
from .scheduled_value import scheduled_value

PARITY_IMAGE_SIDE, PARITY_LATENT_SIDE = 512, 64  # threestudio's stable-diffusion-guidance sizes
CONTROLNET_CALL = (
    "threestudio's ControlNet call guidance(rgb, cond_rgb, prompt_utils) is not supported; pass the "
    "condition image as guidance(rgb, prompt_utils, elevation, azimuth, camera_distances, cond_rgb=...) "
    "with controlnet_name_or_path set"
)


def _torch():
    import torch  # noqa: PLC0415 - loaded with the networks

    return torch


def _per_sample(torch, name, x, B):
    """A float ``[B]`` tensor from a ``[B]`` (or ``[B, 1]``) tensor; errors name the argument."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a [B] tensor, got {type(x).__name__}")
    if x.numel() != B:
        raise ValueError(f"{name}: expected {B} values (one per sample), got {describe(x)}")
    return x.reshape(B)


class GuidanceAdapter:
    """threestudio's guidance interface; a subclass sets ``cfg`` and ``device``, then calls ``configure``."""

    cfg: GuidanceConfig

    def configure(self):
        """Load the networks and the estimator; set the t range from the config at step 0."""
        from ssd_toolkit.integrations.guidance.controlnet import ControlNetGuidance  # noqa: PLC0415
        from ssd_toolkit.integrations.guidance.models import load_models  # noqa: PLC0415

        torch = _torch()
        cfg = self.cfg
        check_config(cfg)
        name, params = estimator_arguments(cfg)  # a bad name fails here, before the networks load
        self.parity = parity_on(cfg, name)
        dtype = "float16" if cfg.half_precision_weights else "float32"
        models = load_models(
            cfg.pretrained_model_name_or_path, cfg.controlnet_name_or_path, device=self.device, dtype=dtype
        )
        self.guidance = ControlNetGuidance(
            models, estimator=name, estimator_params=params, weighting=cfg.weighting_strategy, seed=int(cfg.seed),
            source_prompt=cfg.source_prompt, gradient_options=cfg.gradient_options,
        )
        self.vae, self.unet, self.weights_dtype = models.vae, models.unet, models.dtype
        if cfg.enable_attention_slicing:
            self.unet.set_attention_slice(1)
        if cfg.enable_channels_last_format:
            self.unet.to(memory_format=torch.channels_last)
        if cfg.token_merging:
            try:
                import tomesd  # noqa: PLC0415
            except ImportError as exc:
                raise ImportError("token_merging: true needs tomesd: pip install tomesd") from exc
            tomesd.apply_patch(self.unet, **dict(cfg.token_merging_params or {}))
        self.null_text, self._warned_empty_negative = None, False
        if "negative" in self.guidance.estimator.branches:
            self.null_text = self.guidance.encode_prompts([""])
        self.num_train_timesteps = self.guidance.num_train_timesteps
        self.alphas = self.guidance.alphas_cumprod
        self.t_generator = torch.Generator(device="cpu").manual_seed(int(cfg.seed) + 1)
        self.grad_clip_val = None
        self.last_diagnostics, self.last_t, self.last_output = {}, None, None
        self.update_step(0, 0)

    # --------------------------------------------------------- threestudio's hooks

    def set_min_max_steps(self, min_step_percent=0.02, max_step_percent=0.98):
        """``min_step = int(T * min_step_percent)``, likewise ``max_step`` (inclusive), as threestudio."""
        T = self.num_train_timesteps
        lo, hi = int(T * min_step_percent), int(T * max_step_percent)
        if not 0 <= lo <= hi <= T - 1:
            raise ValueError(
                f"min_step_percent/max_step_percent: expected 0 <= {T} * min <= {T} * max <= {T - 1}, "
                f"got {min_step_percent!r}, {max_step_percent!r} (t in [{lo}, {hi}])"
            )
        self.min_step, self.max_step = lo, hi

    def update_step(self, epoch, global_step, on_load_weights=False):
        """threestudio's per-step hook: grad clip and t range from the config's schedules."""
        cfg = self.cfg
        self.global_step = int(global_step)
        if cfg.grad_clip is not None:
            self.grad_clip_val = scheduled_value(f"{KEY}grad_clip", cfg.grad_clip, epoch, global_step)
        lo = scheduled_value(f"{KEY}min_step_percent", cfg.min_step_percent, epoch, global_step)
        if cfg.sqrt_anneal:
            progress = (float(global_step) / cfg.trainer_max_steps) ** 0.5
            top = cfg.max_step_percent
            top = top if isinstance(top, (int, float)) else list(top)[1]
            lo = (top - lo) * (1 - progress) + lo
            self.set_min_max_steps(lo, lo)
        else:
            hi = scheduled_value(f"{KEY}max_step_percent", cfg.max_step_percent, epoch, global_step)
            self.set_min_max_steps(lo, hi)

    # ------------------------------------------------------------------ VAE

    def encode_images(self, imgs):
        """VAE latents ``[B, 4, h, w]`` of ``[B, 3, H, W]`` images in [0, 1], in the graph, imgs' dtype.

        Under parity as threestudio: at the images' own size, ``latent_dist.sample()`` from
        torch's global generator; otherwise resized to the VAE's side, our seeded sample.
        """
        if not self.parity:
            return self.guidance.encode_rgb(imgs).to(imgs.dtype)
        x = (imgs * 2.0 - 1.0).to(device=self.device, dtype=self.weights_dtype)
        latents = self.vae.encode(x).latent_dist.sample() * self.vae.config.scaling_factor
        return latents.to(imgs.dtype)

    def _latent_side(self):
        return PARITY_LATENT_SIDE if self.parity else self.guidance.latent_size

    def decode_latents(self, latents, latent_height=None, latent_width=None):
        """Images ``[B, 3, H, W]`` in [0, 1] of latents resized to ``latent_height x latent_width``
        (default threestudio's 64 under parity, else the UNet's native side); differentiable."""
        torch = _torch()
        side = self._latent_side()
        size = (latent_height or side, latent_width or side)
        x = torch.nn.functional.interpolate(latents, size, mode="bilinear", align_corners=False)
        x = x / self.vae.config.scaling_factor
        image = self.vae.decode(x.to(self.weights_dtype)).sample
        return (image * 0.5 + 0.5).clamp(0, 1).to(latents.dtype)

    # ------------------------------------------------------------------ one step

    def _texts(self, prompt_utils, elevation, azimuth, camera_distances):
        """(cond, uncond, negative) embeddings for the estimator's branches."""
        torch = _torch()
        if not hasattr(prompt_utils, "get_text_embeddings"):
            raise TypeError(
                f"prompt_utils: expected threestudio's PromptProcessorOutput, got {type(prompt_utils).__name__}"
            )
        if getattr(prompt_utils, "use_perp_neg", False):
            raise ValueError(
                "prompt_processor.use_perp_neg: expected false "
                "(ssd-toolkit-guidance does not implement Perp-Neg), got True"
            )
        emb = prompt_utils.get_text_embeddings(elevation, azimuth, camera_distances, self.cfg.view_dependent_prompting)
        cond, negative = emb.chunk(2, dim=0)  # threestudio's order: [cond; uncond = negative prompt]
        if self.null_text is None:
            return cond, negative, None
        null = self.null_text.expand(cond.shape[0], -1, -1)
        # a tolerance, not torch.equal: under half_precision_weights threestudio's embeddings
        # are float16 and the null text float32, so an empty negative prompt differs by rounding
        if not self._warned_empty_negative and torch.allclose(negative.to(null), null, rtol=1e-2, atol=1e-2):
            self._warned_empty_negative = True
            warnings.warn(
                f"{self.guidance.estimator.name}: the prompt processor's negative prompt is empty, so the "
                "negative branch equals the null text; set system.prompt_processor.negative_prompt",
                UserWarning,
                stacklevel=3,
            )
        return cond, null, negative

    def _latents(self, rgb, rgb_as_latents):
        torch = _torch()
        if not isinstance(rgb, torch.Tensor) or rgb.ndim != 4:
            raise ValueError(f"rgb: expected a [B, H, W, C] tensor, got {describe(rgb)}")
        channels = 4 if rgb_as_latents else 3
        if rgb.shape[-1] != channels:
            raise ValueError(
                f"rgb: expected {channels} channels last (rgb_as_latents={bool(rgb_as_latents)}), got {describe(rgb)}"
            )
        bchw = rgb.permute(0, 3, 1, 2)
        if rgb_as_latents:
            side = self._latent_side()
            return torch.nn.functional.interpolate(bchw, (side, side), mode="bilinear", align_corners=False)
        if self.parity:  # threestudio encodes at 512x512 whatever the render size
            size = (PARITY_IMAGE_SIDE, PARITY_IMAGE_SIDE)
            bchw = torch.nn.functional.interpolate(bchw, size, mode="bilinear", align_corners=False)
        return self.encode_images(bchw)

    def __call__(
        self,
        rgb,
        prompt_utils,
        elevation=None,
        azimuth=None,
        camera_distances=None,
        rgb_as_latents=False,
        guidance_eval=False,
        cond_rgb=None,
        **kwargs,
    ):
        """One guidance step, called as threestudio's systems call theirs.

        Args:
            rgb: ``[B, H, W, 3]`` in [0, 1] (VAE-encoded in the graph), or with
                ``rgb_as_latents`` ``[B, H, W, 4]`` latents (resized to the UNet's side).
            prompt_utils: threestudio's ``PromptProcessorOutput`` (Perp-Neg off).
            elevation, azimuth, camera_distances: ``[B]`` tensors (degrees); required
                (None only so that a call without them gets a clear error).
            rgb_as_latents: see ``rgb``.
            guidance_eval: must be False (threestudio's guidance-eval images are not produced).
            cond_rgb: ``[B or 1, H, W, 3]`` ControlNet condition in [0, 1] (needs
                ``controlnet_name_or_path``), or None.
            **kwargs: the rest of threestudio's batch (rays, matrices ...), ignored.

        Returns:
            ``{cfg.loss_key: loss, "grad_norm": ||g||, "min_step": int, "max_step": int}``;
            ``loss`` is ``0.5 ||x - sg(x - g)||^2 / B`` on the latents (``dL/dx = g / B``).
        """
        torch = _torch()
        if guidance_eval:
            raise ValueError(
                "guidance_eval: expected False (ssd-toolkit-guidance does not render guidance-eval images), got True"
            )
        if isinstance(prompt_utils, torch.Tensor):  # checked first: that call passes no camera angles
            raise TypeError(f"prompt_utils: {CONTROLNET_CALL}; got a tensor ({describe(prompt_utils)})")
        latents = self._latents(rgb, rgb_as_latents)
        B = int(latents.shape[0])
        elevation = _per_sample(torch, "elevation", elevation, B)
        azimuth = _per_sample(torch, "azimuth", azimuth, B)
        camera_distances = _per_sample(torch, "camera_distances", camera_distances, B)
        cond, uncond, negative = self._texts(prompt_utils, elevation, azimuth, camera_distances)
        conditions = None
        if cond_rgb is not None:
            if self.guidance.models.controlnet is None:
                raise ValueError("cond_rgb: expected None (no controlnet_name_or_path is configured), got a tensor")
            if not isinstance(cond_rgb, torch.Tensor) or cond_rgb.ndim != 4 or cond_rgb.shape[-1] != 3:
                raise ValueError(f"cond_rgb: expected a [B or 1, H, W, 3] tensor in [0, 1], got {describe(cond_rgb)}")
            conditions = cond_rgb.permute(0, 3, 1, 2)
        noise = None  # drawn by the guidance from its own generator
        if self.parity:  # threestudio's order and generator: t, then the noise
            t = torch.randint(self.min_step, self.max_step + 1, [B], dtype=torch.long, device=self.device)
            noise = torch.randn_like(latents)
        else:
            t = torch.randint(self.min_step, self.max_step + 1, (B,), generator=self.t_generator)
        if self.cfg.source_prompt is not None:
            negative = None  # the guidance encodes source_prompt for that slot
        out = self.guidance.guide(
            latents, cond, uncond, conditions, t=t, text_negative=negative, noise=noise,
            controlnet_conditioning_scale=float(self.cfg.condition_scale),
            train_step=self.global_step, max_iteration=self.cfg.trainer_max_steps,
        )
        grad = torch.nan_to_num(out.gradients)
        if self.grad_clip_val is not None:
            grad = grad.clamp(-self.grad_clip_val, self.grad_clip_val)
        self.last_t, self.last_output = out.t, out
        self.last_diagnostics = {**out.diagnostics, "min_step": self.min_step, "max_step": self.max_step}
        return {
            self.cfg.loss_key: sds_loss(latents, grad),
            "grad_norm": grad.float().norm(),
            "min_step": self.min_step,
            "max_step": self.max_step,
        }


class ThreestudioGuidance(GuidanceAdapter):
    """The guidance without threestudio: ``ThreestudioGuidance({"pretrained_model_name_or_path": ...})``.

    Args:
        cfg: a dict of ``GuidanceConfig`` fields, a ``GuidanceConfig``, or None (defaults).
        device: torch device for the networks.

    Raises:
        TypeError: an unknown field (the message lists the known ones).
        ValueError: a field this guidance cannot honour (``config.check_config``).
    """

    def __init__(self, cfg=None, device="cpu"):
        if isinstance(cfg, GuidanceConfig):
            self.cfg = cfg
        else:
            given = dict(cfg or {})
            known = [f.name for f in fields(GuidanceConfig)]
            unknown = sorted(set(given) - set(known))
            if unknown:
                hint = did_you_mean(unknown[0], known)
                raise TypeError(f"cfg: unknown field(s) {unknown}{hint}; expected fields among {known}")
            self.cfg = GuidanceConfig(**given)
        self.device = _torch().device(device)
        self.configure()
