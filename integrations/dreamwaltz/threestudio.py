"""threestudio's guidance call around ``ControlNetGuidance``.

threestudio calls a guidance module as
``guidance(rgb, prompt_utils, elevation, azimuth, camera_distances, rgb_as_latents=False, **kw)``
and sums the ``loss_*`` entries it returns (weighted by ``lambda_*`` in the system config).
Camera angles: threestudio's elevation is measured up from the horizontal plane, so the
polar angle DreamWaltz's view sectors use is ``90 - elevation``; its azimuth (degrees,
0 = the object's front, which threestudio's own view prompts also assume) is used as is.
So "overhead" is elevation >= 60 and "bottom" elevation <= -60.
"""

from __future__ import annotations

from .guidance import _check_batch, _describe, _torch
from .prompts import view_prompts


class ThreestudioGuidance:
    """A threestudio-style guidance module backed by a ``ControlNetGuidance``.

    Args:
        guidance: a ``ControlNetGuidance`` (e.g. from ``load_guidance``).
        prompt: the subject text used when the call passes no prompt; view prompts
            ``"{view} view of {prompt}"`` are built from the camera angles.
        view_dependent_prompting: build view prompts from the angles (threestudio's default
            True); False uses ``prompt`` for every view.

    Call returns a dict: ``loss_<estimator>`` (``loss_ssd`` for SSD: ``0.5 ||x - sg(x - g)||^2 / B``,
    so its gradient is ``g / B``, threestudio's convention), ``grad_norm`` (one global
    norm of ``g``), ``min_step`` / ``max_step`` (the sampler's range at the current step),
    ``diagnostics`` (per-step logging dict) and ``t``.
    """

    def __init__(self, guidance, prompt=None, view_dependent_prompting=True):
        self.guidance = guidance
        self.prompt = prompt
        self.view_dependent_prompting = bool(view_dependent_prompting)
        self.global_step = 0
        self.loss_key = "loss_" + str(getattr(guidance.estimator, "name", "guidance")).replace("-", "_")

    def update_step(self, epoch, global_step, on_load_weights=False):
        """threestudio's per-step hook: remembers ``global_step`` for the timestep range."""
        self.global_step = int(global_step)

    def _text(self, prompt_utils, elevation, azimuth, camera_distances, B):
        """(cond, uncond) embeddings ``[B, 77, D]`` each."""
        g = self.guidance
        if hasattr(prompt_utils, "get_text_embeddings"):
            # threestudio's PromptProcessorOutput: [cond; uncond] (threestudio's order)
            emb = prompt_utils.get_text_embeddings(elevation, azimuth, camera_distances, self.view_dependent_prompting)
            text_cond, text_uncond = emb.chunk(2, dim=0)
            return text_cond, text_uncond
        prompt = self.prompt if prompt_utils is None else prompt_utils
        if isinstance(prompt, str):
            if self.view_dependent_prompting:
                polar = 90.0 - elevation.detach().float().cpu()
                prompts = view_prompts(prompt, polar, azimuth.detach().float().cpu())
            else:
                prompts = [prompt] * B
        elif isinstance(prompt, (list, tuple)) and len(prompt) == B and all(isinstance(p, str) for p in prompt):
            prompts = list(prompt)
        else:
            raise TypeError(
                "prompt_utils: expected threestudio's PromptProcessorOutput, a prompt string or "
                f"{B} prompt strings, got {type(prompt_utils).__name__}"
            )
        return g.encode_prompts(prompts), g.encode_prompts([g.negative_prompt] * B)

    def __call__(
        self,
        rgb,
        prompt_utils,
        elevation,
        azimuth,
        camera_distances,
        rgb_as_latents=False,
        cond_rgb=None,
        controlnet_conditioning_scale=1.0,
        **kwargs,
    ):
        """One step.

        Args:
            rgb: ``[B, H, W, 3]`` in [0, 1] (VAE-encoded), or with ``rgb_as_latents``
                ``[B, H, W, 4]`` latents (resized to the UNet's sample size, as threestudio).
            prompt_utils: threestudio's ``PromptProcessorOutput`` (its
                ``get_text_embeddings`` gives ``[cond; uncond]``), a prompt string (view
                prompts from the angles) or a list of ``B`` prompts; None uses ``prompt``.
            elevation, azimuth, camera_distances: ``[B]`` tensors, degrees.
            rgb_as_latents: see ``rgb``.
            cond_rgb: ``[B or 1, H, W, 3]`` condition images in [0, 1] (threestudio's
                ControlNet guidance argument), or None for no ControlNet.
            controlnet_conditioning_scale: ControlNet residual scale.
            **kwargs: ignored (threestudio passes extra render outputs).
        """
        torch = _torch()
        g = self.guidance
        if not isinstance(rgb, torch.Tensor) or rgb.ndim != 4:
            raise ValueError(f"rgb: expected a [B, H, W, C] tensor, got {_describe(rgb)}")
        B = int(rgb.shape[0])
        elevation = _check_batch("elevation", torch.as_tensor(elevation).reshape(-1, 1), B, 2).reshape(B)
        azimuth = _check_batch("azimuth", torch.as_tensor(azimuth).reshape(-1, 1), B, 2).reshape(B)
        rgb_bchw = rgb.permute(0, 3, 1, 2)
        if rgb_as_latents:
            side = g.latent_size
            latents = torch.nn.functional.interpolate(rgb_bchw, (side, side), mode="bilinear", align_corners=False)
        else:
            latents = g.encode_rgb(rgb_bchw)
        text_cond, text_uncond = self._text(prompt_utils, elevation, azimuth, camera_distances, B)
        conditions = None if cond_rgb is None else _check_batch("cond_rgb", cond_rgb, B, 4).permute(0, 3, 1, 2)
        out = g.guide(
            latents,
            text_cond,
            text_uncond,
            conditions,
            train_step=self.global_step,
            controlnet_conditioning_scale=controlnet_conditioning_scale,
        )
        min_step, max_step = g.t_sampler.t_range(self.global_step)
        return {
            self.loss_key: out.loss,
            "grad_norm": out.gradients.float().norm(),
            "min_step": int(min_step),
            "max_step": int(max_step),
            "t": out.t,
            "diagnostics": out.diagnostics,
        }
