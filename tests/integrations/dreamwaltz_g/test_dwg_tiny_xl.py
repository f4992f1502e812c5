"""The tiny random SDXL pipeline loads through diffusers' own SDXL classes and runs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from ssd_toolkit.integrations.dreamwaltz_g.tiny_xl import build_tiny_sdxl  # noqa: E402


def test_tiny_sdxl_loads_and_runs_with_controlnet(tmp_path):
    root = build_tiny_sdxl(tmp_path / "xl")
    assert (root / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()  # DreamWaltz-G asks for fp16
    controlnet = diffusers.ControlNetModel.from_pretrained(str(root / "controlnet"))
    pipe = diffusers.StableDiffusionXLControlNetPipeline.from_pretrained(str(root), controlnet=controlnet)
    embeds, neg, pooled, neg_pooled = pipe.encode_prompt("a robot", device="cpu", num_images_per_prompt=1)
    assert embeds.shape == (1, 77, 64) and pooled.shape == (1, 32)
    time_ids = pipe._get_add_time_ids((64, 64), (0, 0), (64, 64), dtype=embeds.dtype,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    added = {"text_embeds": pooled, "time_ids": time_ids}
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    down, mid = controlnet(x, t, encoder_hidden_states=embeds, controlnet_cond=torch.rand(1, 3, 64, 64),
                           added_cond_kwargs=added, return_dict=False)  # fmt: skip
    eps = pipe.unet(x, t, encoder_hidden_states=embeds, added_cond_kwargs=added, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample  # fmt: skip
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    assert isinstance(pipe.scheduler, diffusers.EulerDiscreteScheduler)
