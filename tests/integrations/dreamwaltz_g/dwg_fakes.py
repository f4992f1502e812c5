"""A stand-in for DreamWaltz-G's guidance base class, written from the facts of its interface
(Yukun-Huang/DreamWaltz-G, ``core/guidance/basic.py``, ``stable_diffusion.py``,
``controlnet.py``; commit in ``integrations/dreamwaltz_g/config.py``), none of its code.

What the mixin relies on and this fake reproduces:

- ``__init__(cfg, device)`` sets ``cfg``, ``loss_type`` (``cfg.sds_loss_type``),
  ``weight_type`` (``cfg.sds_weight_type``), ``use_negative_text``, ``alphas_cumprod``
  (SD's scaled-linear schedule), ``scheduler`` (with ``scale_model_input(sample, t)``).
- ``__call__(inputs, text_embeds_dict, train_step, max_iteration, add_noise=True,
  grad_viz=False, **kwargs)``: pops ``scaler``; ``preprocess`` draws ``self.timestep``
  ([B] long) and sets ``self.guidance_scale``; under ``no_grad``: for ``ism``,
  ``self.ism(latents, text_embeds_dict, train_step, max_iteration)`` gives
  ``(latents_noisy, noise)``, else ``noise = randn_like`` and ``add_noise``; then
  ``calc_gradients(latents_noisy=, text_embeds_dict=, noise=, train_step=, max_iteration=,
  **kwargs)`` (``cond_inputs`` rides in kwargs) returns ``(gradients, noise_pred,
  text_embeddings)``; the result dict has ``latents``, ``timestep``, ``sources``,
  ``targets``, ``gradients``, ``diffusion_loss``.
- ``prepare_text_embeddings(text_embeds_dict, text_keys)`` concatenates the keys' rows.
- ``_predict(latents_model_input, text_embeddings, cond_inputs)`` (ControlNet) reads the
  timestep from ``self.timestep``; the plain ``_predict(latents_model_input,
  text_embeddings)`` likewise.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch

from ssd_toolkit.integrations.dreamwaltz_g.mixin import SSDGuidanceMixin

NEGATIVE_TEXT = "lowres, bad anatomy"


@dataclass
class FakeGuideConfig:
    """The ``GuideConfig`` fields the guidance step reads (their defaults)."""

    sds_loss_type: str = "sds"
    sds_weight_type: str = "sjc"
    guidance_scale: float = 50.0
    use_negative_text: bool = True
    grad_latent_clip: bool = False
    grad_latent_clip_scale: float = 3.0
    grad_latent_norm: bool = False
    grad_latent_nan_to_num: bool = False
    ssd_M: float = 200.0


def sd_alphas_cumprod():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def denoiser(x, emb, t):
    """A fixed, smooth, per-row function of the input, its text and its timestep."""
    t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, 1, 1)
    return torch.tanh(0.7 * x + emb.mean(dim=(1, 2)).reshape(-1, 1, 1, 1) + 1e-3 * t) - 0.05 * x


def embed(seed, rows=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 77, 8, generator=g)


def text_embeds_dict(rows=1):
    """The trainer's dict: 'null', 'pos', 'neg', 'viewed', and 'text' set per step."""
    pos = embed(1, rows)
    return {"null": embed(0, rows), "pos": pos, "neg": embed(2, rows), "viewed": [], "text": pos}


class FakeScoreDistillation:
    """Their ``ScoreDistillation`` as the mixin sees it; records every network call."""

    def __init__(self, cfg, device):
        self.cfg, self.device = cfg, device
        self.loss_type, self.weight_type = cfg.sds_loss_type, cfg.sds_weight_type
        self.use_negative_text = cfg.use_negative_text
        self.initial_guidance_scale = cfg.guidance_scale
        self.do_classifier_free_guidance = cfg.guidance_scale > 1.0
        self.alphas_cumprod = sd_alphas_cumprod()
        self.scale_calls, self.predict_calls, self.super_calls = [], [], []
        self.scheduler = types.SimpleNamespace(scale_model_input=self._scale)
        self.timestep = self.guidance_scale = None
        self.init_ran = True

    def _scale(self, sample, timestep):
        self.scale_calls.append((tuple(sample.shape), timestep.clone()))
        return sample

    def prepare_text_embeddings(self, text_embeds_dict, text_keys):
        return torch.concat([text_embeds_dict[k] for k in text_keys], dim=0)

    def _predict(self, latents_model_input, text_embeddings):
        self.predict_calls.append(("plain", tuple(latents_model_input.shape), tuple(text_embeddings.shape),
                                   self.timestep.clone(), None))  # fmt: skip
        return denoiser(latents_model_input, text_embeddings, self.timestep)

    def calc_gradients(self, latents_noisy, text_embeds_dict, noise, guidance_rescale=0.0, train_step=None,
                       max_iteration=None, **kwargs):
        self.super_calls.append(dict(guidance_rescale=guidance_rescale, train_step=train_step,
                                     max_iteration=max_iteration, **kwargs))  # fmt: skip
        return torch.full_like(latents_noisy, 7.0), None, None  # a marker: their result

    def add_noise(self, latents, noise, t):
        a = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        return a.sqrt() * latents + (1 - a).sqrt() * noise

    def __call__(self, inputs, text_embeds_dict, train_step, max_iteration, add_noise=True, grad_viz=False, **kwargs):
        kwargs.pop("scaler", None)
        latents = inputs
        self.guidance_scale = kwargs.pop("guidance_scale", self.initial_guidance_scale)
        self.timestep = kwargs.pop("timestep", None)
        if self.timestep is None:
            self.timestep = torch.randint(20, 981, [latents.shape[0]], dtype=torch.long)
        with torch.no_grad():
            if self.loss_type == "ism":
                latents_noisy, noise = self.ism(latents, text_embeds_dict, train_step, max_iteration)
            else:
                noise = torch.randn_like(latents)
                latents_noisy = self.add_noise(latents, noise, self.timestep) if add_noise else latents
            gradients, noise_pred, _ = self.calc_gradients(latents_noisy=latents_noisy,
                                                           text_embeds_dict=text_embeds_dict, noise=noise,
                                                           train_step=train_step, max_iteration=max_iteration,
                                                           **kwargs)  # fmt: skip
        self.last_inputs = {"latents_noisy": latents_noisy, "noise": noise, "noise_pred": noise_pred}
        targets = (latents - gradients).detach()
        return {"latents": latents, "timestep": self.timestep, "sources": latents, "targets": targets,
                "gradients": gradients, "diffusion_loss": (gradients * latents).sum()}  # fmt: skip


class FakeControlNetScoreDistillation(FakeScoreDistillation):
    """Their ``ControlNetScoreDistillation``: ``_predict`` takes ``cond_inputs``."""

    def _predict(self, latents_model_input, text_embeddings, cond_inputs):
        self.predict_calls.append(("controlnet", tuple(latents_model_input.shape), tuple(text_embeddings.shape),
                                   self.timestep.clone(), cond_inputs))  # fmt: skip
        bias = 0.0
        if isinstance(cond_inputs, torch.Tensor):
            rows = cond_inputs if cond_inputs.shape[0] == latents_model_input.shape[0] else cond_inputs[:1]
            bias = rows.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)
        return denoiser(latents_model_input, text_embeddings, self.timestep) + bias


class Ours(SSDGuidanceMixin, FakeControlNetScoreDistillation):
    _plain_predict = FakeScoreDistillation._predict


class OursPlain(SSDGuidanceMixin, FakeScoreDistillation):
    _plain_predict = FakeScoreDistillation._predict
