"""DreamWaltz's side of the drop-in tests: its ``GuideConfig`` and its trainer's calls.

DreamWaltz's code is not used: ``DreamWaltzGuideConfig`` lists its ``GuideConfig`` fields and
defaults (``configs/train_config.py``); ``build`` and ``trainer_step`` replay what its
``core/trainer.py`` (commit ``dreamwaltz_compat.DREAMWALTZ_COMMIT``) does with the guidance.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ssd_toolkit.integrations.dreamwaltz import ControllableScoreDistillationSampling, register_guide_fields

TEXT = "a wooden robot"
S = 8  # tiny latent side (64x64 images)


@dataclass
class DreamWaltzGuideConfig:
    """DreamWaltz's GuideConfig: its fields and defaults."""

    text: str = ""
    loss_type: str = "sjc"
    concept_name: Optional[str] = None
    diffusion_name: str = "runwayml/stable-diffusion-v1-5"
    diffusion_fp16: bool = False
    use_controlnet: bool = True
    guidance_scale: float = 50.0
    guidance_adjust: str = "constant"
    controlnet_scale: float = 1.0
    min_timestep: float = 0.020
    max_timestep: float = 0.980
    time_sampling: str = "uniform"
    time_prior: str = "uniform"
    grad_clip: bool = False
    grad_norm: bool = True


register_guide_fields(DreamWaltzGuideConfig)  # as core/trainer.py calls it after the changed import


def build(tiny_dir, condition_type=("pose",), latent_mode=True, **guide):
    """``Trainer.init_diffusion``: the keywords DreamWaltz passes, then frozen parameters."""
    cfg = DreamWaltzGuideConfig(text=TEXT, diffusion_name=str(tiny_dir), **guide)
    model = ControllableScoreDistillationSampling(
        device=torch.device("cpu"),
        condition_type=list(condition_type),
        model_name=cfg.diffusion_name,
        weight_mode=cfg.loss_type,
        fp16=cfg.diffusion_fp16,
        guidance_scale=cfg.guidance_scale,
        concept_name=cfg.concept_name,
        latent_mode=latent_mode,
        guide_cfg=cfg,
    )
    for p in model.parameters():
        p.requires_grad = False
    return model


def pose_image(seed=0, side=512):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((side, side, 3)) * 255).astype(np.uint8))


def trainer_step(g, x, train_step=1, max_step=2, cond=None, B=1, lambda_guidance=1.0):
    """``Trainer.train_forward`` + the start of ``Trainer.train``'s backward."""
    text_z_uc, text_z = g.get_text_embeds([TEXT], concat=False)
    text_embeds = torch.cat((text_z_uc.expand(B, -1, -1), text_z.expand(B, -1, -1)))
    out = g.estimate(
        text_embeddings=text_embeds,
        inputs=x,
        cond_inputs=[pose_image()] if cond is None else cond,
        controlnet_conditioning_scale=1.0,
        train_step=train_step,
        max_iteration=max_step,
        backward=False,
    )
    out["gradients"] *= lambda_guidance
    return out
