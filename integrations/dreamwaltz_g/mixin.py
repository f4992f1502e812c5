"""The part of DreamWaltz-G's guidance that ssd_toolkit replaces: ``calc_gradients`` and ``ism``.

``SSDGuidanceMixin`` goes in front of one of DreamWaltz-G's guidance classes
(``core/guidance/stable_diffusion.py``, ``core/guidance/controlnet.py``); ``classes.py``
builds those subclasses at run time where DreamWaltz-G is importable. Everything else of
their class runs as it is: model loading, LoRA / concept loading, the time prior
(``preprocess``), ``guidance_adjust``, PGC and RGB gradient hooks, the denoising loss
types, SDXL. What this mixin computes (facts from DreamWaltz-G commit
``config.DREAMWALTZ_G_COMMIT``):

- ``guide.sds_loss_type: ssd`` (new): SSD (``ssd_toolkit.get_estimator("ssd", M)``, M =
  ``guide.ssd_M``) on the pair DreamWaltz-G's CFG uses, ``[neg; text]`` when
  ``guide.use_negative_text`` (its default) else ``[null; text]``; always both branches
  (SSD has no CFG scale, so ``guidance_scale <= 1`` does not drop one).
- ``nfsd``: ssd_toolkit's ``nfsd`` (their formula, per sample; theirs fails at batch > 1
  when the samples' t fall on both sides of 200).
- ``ism``: ssd_toolkit's ``ism`` (DDIM inversion with the plain UNet on the ``null`` text,
  then CFG at ``x_t``; theirs raises ``UnboundLocalError`` as published), at the t their
  time sampler drew, one per sample.
- every other loss type: their own ``calc_gradients``, untouched (the same numbers).

Then, for the three above, their weighting (``guide.sds_weight_type``) and the
``grad_latent_*`` options in their order, through ``ssd_toolkit.get_weighting`` and
``ssd_toolkit.gradient_options``. Batch > 1 works for them: one-row text embeddings are
repeated to the batch, t is repeated to the stacked branches for the networks, and a
condition tensor with one row per sample is stacked with the branches.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

import ssd_toolkit
from ssd_toolkit.estimators import at_step
from ssd_toolkit.gradient_options import GradientOptions

from .config import check_guide_cfg, ssd_threshold

OWN_LOSS_TYPES = ("ssd", "nfsd", "ism")  # the loss types this mixin computes
WEIGHTINGS = {"dreamfusion": "dreamfusion", "latent-nerf": "latent-nerf", "ism": "ism", "sjc": "sjc"}


def _rows(embeds, batch):
    """One text embedding (a tensor, or SDXL's ``(embeds, pooled)``) with ``batch`` rows."""
    if isinstance(embeds, (tuple, list)):
        return type(embeds)(_rows(e, batch) for e in embeds)
    if embeds.shape[0] == batch:
        return embeds
    if embeds.shape[0] != 1:
        raise ValueError(f"text_embeds_dict: expected embeddings with 1 or {batch} rows, got {tuple(embeds.shape)}")
    return embeds.expand(batch, *embeds.shape[1:])


def _stack_condition(cond, batch, branches):
    """A condition with one row per sample, stacked once per branch (as the latents are);
    anything else (PIL images, one-row tensors) is left to their ``prepare_image``, which
    repeats a single image to the whole network batch."""
    if isinstance(cond, torch.Tensor) and cond.dim() == 4 and cond.shape[0] == batch and batch > 1:
        return torch.cat([cond] * branches, dim=0)
    if isinstance(cond, list) and cond and isinstance(cond[0], torch.Tensor):
        return [_stack_condition(c, batch, branches) for c in cond]
    return cond


class SSDGuidanceMixin:
    """Put in front of a DreamWaltz-G ``BasicScoreDistillation`` subclass (see ``classes``).

    Reads from ``cfg`` (their ``GuideConfig``): ``sds_loss_type`` (adds ``"ssd"``),
    ``ssd_M`` (added field, default 200), ``sds_weight_type``, ``use_negative_text``,
    ``grad_latent_clip``, ``grad_latent_clip_scale``, ``grad_latent_norm``,
    ``grad_latent_nan_to_num``. Uses from their class: ``loss_type``, ``weight_type``,
    ``timestep`` ([B] long, set by their ``preprocess``), ``guidance_scale``,
    ``alphas_cumprod``, ``prepare_text_embeddings``, ``_predict``, and for ISM the plain (no
    ControlNet) ``_predict`` of their ``ScoreDistillation`` / ``ScoreDistillationXL`` (class
    attribute ``_plain_predict``). x_t goes to ``_predict`` without their
    ``scheduler.scale_model_input`` (see ``_branch_predictions``).

    Attributes:
        ssd_M: SSD's threshold.
        last_stats: the estimator's per-sample stats of the last ``calc_gradients`` of an own
            loss type (SSD: ``r``, ``h_norm``, ``mode_seeking``, ...; always ``grad_norm``),
            float64 ``[B]`` arrays; None before.
        last_unet_calls: network calls on the batch in the last ISM noising (None before).
    """

    _plain_predict = None  # set by classes.build(): their plain-UNet _predict

    def __init__(self, cfg, device):
        check_guide_cfg(cfg)  # before any model is loaded
        super().__init__(cfg, device=device)
        self.ssd_M = ssd_threshold(cfg)
        self.last_stats = None
        self.last_unet_calls = None
        if self.loss_type == "ssd" and getattr(cfg, "grad_latent_norm", False):
            warnings.warn(
                "guide.grad_latent_norm: True normalises each sample's gradient to unit L2, which erases SSD's "
                "||h|| rescaling and w(t); set it False to keep SSD's magnitudes",
                UserWarning,
                stacklevel=2,
            )

    # -- the estimator step -------------------------------------------------------------
    def _branch_keys(self):
        if self.loss_type == "nfsd":
            return ("null", "text", "neg")
        return ("neg", "text") if self.use_negative_text else ("null", "text")

    @contextlib.contextmanager
    def _timestep_as(self, timestep):
        """Their ``_predict`` reads ``self.timestep``: give it ``timestep`` for one call."""
        saved = self.timestep
        self.timestep = timestep
        try:
            yield
        finally:
            self.timestep = saved

    def _branch_predictions(self, latents_noisy, text_embeds_dict, keys, **kwargs):
        """Their ``_predict`` on the stacked branches; the chunks in ``keys`` order."""
        batch, k = latents_noisy.shape[0], len(keys)
        embeds = {key: _rows(text_embeds_dict[key], batch) for key in keys}
        text_embeddings = self.prepare_text_embeddings(text_embeds_dict=embeds, text_keys=keys)
        # x_t as their add_noise made it (DDPM form), unscaled: their scale_model_input is the
        # identity for SD's PNDM/DDPM/DDIM schedulers, and SDXL's Euler one fails on a t off
        # its 50-step grid (and would rescale a DDPM-form input by a stale sigma)
        model_input = torch.cat([latents_noisy] * k, dim=0)
        if "cond_inputs" in kwargs:
            kwargs["cond_inputs"] = _stack_condition(kwargs["cond_inputs"], batch, k)
        timestep = self.timestep if batch == 1 else self.timestep.repeat(k)
        with self._timestep_as(timestep):
            prediction = self._predict(model_input, text_embeddings, **kwargs)
        return prediction, prediction.chunk(k), text_embeddings

    def _weight_and_options(self, gradients):
        """Their ``sds_weight_type`` then ``grad_latent_*`` options, in their order."""
        if self.weight_type is not None:
            w = ssd_toolkit.get_weighting(WEIGHTINGS[self.weight_type])(self.timestep, self.alphas_cumprod)
            gradients.mul_(w.reshape(-1, 1, 1, 1))  # in place: keeps the prediction's dtype, as theirs
        options = GradientOptions(
            grad_latent_clip=bool(self.cfg.grad_latent_clip),
            grad_latent_clip_scale=float(self.cfg.grad_latent_clip_scale),
            grad_latent_norm=bool(self.cfg.grad_latent_norm),
            grad_latent_nan_to_num=bool(self.cfg.grad_latent_nan_to_num),
        )
        return options(gradients)

    def calc_gradients(self, latents_noisy, text_embeds_dict, noise, guidance_rescale=0.0, train_step=None,
                       max_iteration=None, **kwargs):
        """Their signature and return value, ``(gradients, noise_pred, text_embeddings)``.

        ``noise_pred`` (their visualisation input): the CFG prediction ``u + s (c - u)`` for
        ssd and ism, the raw stacked prediction for nfsd (as theirs).

        Raises:
            ValueError: ``guidance_rescale > 0`` with ssd or ism (no CFG output to rescale).
        """
        if self.loss_type not in OWN_LOSS_TYPES:
            return super().calc_gradients(latents_noisy, text_embeds_dict, noise, guidance_rescale=guidance_rescale,
                                          train_step=train_step, max_iteration=max_iteration, **kwargs)
        if guidance_rescale > 0.0 and self.loss_type != "nfsd":
            raise ValueError(
                f"guidance_rescale: {self.loss_type} has no CFG prediction to rescale; expected 0.0, got {guidance_rescale}"
            )
        prediction, chunks, text_embeddings = self._branch_predictions(latents_noisy, text_embeds_dict,
                                                                       self._branch_keys(), **kwargs)
        t = self.timestep
        if self.loss_type == "nfsd":
            uncond, cond, negative = chunks
            est = ssd_toolkit.get_estimator("nfsd", guidance_scale=float(self.guidance_scale))
            gradients, self.last_stats = est(cond, uncond, noise, t, eps_negative=negative, return_stats=True)
            noise_pred = prediction
        else:
            uncond, cond = chunks
            if self.loss_type == "ssd":
                est = ssd_toolkit.get_estimator("ssd", M=self.ssd_M)
            else:
                est = at_step(ssd_toolkit.get_estimator("ism", guidance_scale=float(self.guidance_scale)),
                              train_step, max_iteration)
            gradients, self.last_stats = est(cond, uncond, noise, t, return_stats=True)
            noise_pred = uncond + self.guidance_scale * (cond - uncond)
        return self._weight_and_options(gradients), noise_pred, text_embeddings

    # -- ISM's noisy input ----------------------------------------------------------------
    def ism(self, latents, text_embeds_dict, train_step, max_iteration):
        """ISM's ``(x_t, target)`` at the t their time sampler drew (``self.timestep``, [B]):
        ``ssd_toolkit``'s DDIM inversion with the plain UNet on the ``null`` text (their
        choice); the interval anneals with ``train_step / max_iteration`` as theirs."""
        if self._plain_predict is None:
            raise TypeError(f"{type(self).__name__}: no plain-UNet _predict for ISM's inversion (see classes.build)")
        batch = latents.shape[0]
        null = _rows(text_embeds_dict["null"], batch)
        est = at_step(ssd_toolkit.get_estimator("ism", guidance_scale=float(self.guidance_scale)),
                      train_step, max_iteration)

        def eps_uncond(x, timesteps):
            with self._timestep_as(timesteps):
                return self._plain_predict(x, null)

        noise = torch.randn_like(latents)
        alphas_cumprod = self.alphas_cumprod.to(latents.device)
        x_t, target, self.last_unet_calls = est.noisy_input(eps_uncond, latents, noise, self.timestep, alphas_cumprod)
        return x_t, target
