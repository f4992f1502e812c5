"""ssd-toolkit-guidance with annealed CSD, SDS-Bridge (source prompt) and ISM: the step
reaches the estimators, and the gradients match their formulas on the tiny UNet's outputs."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from threestudio_fakes import PromptOutput, camera_batch  # noqa: E402

from ssd_toolkit.integrations.threestudio.adapter import ThreestudioGuidance  # noqa: E402


def run(tiny_dir, global_step=0, negative_prompt="blurry", B=2, **cfg):
    g = ThreestudioGuidance({"pretrained_model_name_or_path": str(tiny_dir), "half_precision_weights": False,
                             "weighting_strategy": "uniform", **cfg})
    g.update_step(0, global_step)
    latents = torch.randn(B, 8, 8, 4, generator=torch.Generator().manual_seed(2), requires_grad=True)
    g(latents, PromptOutput(g.guidance.encode_prompts, negative_prompt=negative_prompt), **camera_batch(B),
      rgb_as_latents=True)
    return g, g.last_output


def test_annealed_csd_follows_global_step(tiny_dir):
    g, o = run(tiny_dir, global_step=250, estimator="csd-annealed", trainer_max_steps=1000)
    null = g.guidance.predict_noise(o.latents_noisy, o.t, g.guidance.encode_prompts([""] * 2))
    torch.testing.assert_close(o.eps_uncond, null)  # the null text, not the negative prompt
    want = o.eps_cond - 0.125 * o.eps_uncond - 0.875 * o.eps_negative
    torch.testing.assert_close(o.gradients, want, rtol=1e-5, atol=1e-6)


def test_sds_bridge_source_prompt_and_stages(tiny_dir):
    source = "a hamburger, oversaturated, blurry"
    g, o = run(tiny_dir, global_step=5, estimator="sds-bridge", source_prompt=source,
               estimator_params={"stage_two_start_step": 5, "scale": 2.0})
    src = g.guidance.predict_noise(o.latents_noisy, o.t, g.guidance.encode_prompts([source] * 2))
    torch.testing.assert_close(o.eps_negative, src)
    torch.testing.assert_close(o.gradients, 2.0 * (o.eps_cond - o.eps_negative), rtol=1e-5, atol=1e-6)
    _, early = run(tiny_dir, global_step=4, estimator="sds-bridge", source_prompt=source,
                   estimator_params={"stage_two_start_step": 5, "guidance_scale": 7.5})
    assert early.eps_negative is None  # stage 1: SDS on cond and uncond
    want = early.eps_uncond + 7.5 * (early.eps_cond - early.eps_uncond) - early.noise
    torch.testing.assert_close(early.gradients, want, rtol=1e-5, atol=1e-5)


def test_ism_weighting_and_calls(tiny_dir):
    g, o = run(tiny_dir, estimator="ism", weighting_strategy="ism", min_step_percent=0.5, max_step_percent=0.5)
    assert o.t.tolist() == [500, 500] and g.last_diagnostics["unet_calls"] == 2 + 1 + 1  # step 0: interval 100, s = 400
    abar = g.guidance.alphas_cumprod[o.t].view(-1, 1, 1, 1)
    want = ((1 - abar) / abar).sqrt() * (o.eps_uncond + 7.5 * (o.eps_cond - o.eps_uncond) - o.noise)
    torch.testing.assert_close(o.gradients, want, rtol=1e-5, atol=1e-6)


def test_gradient_options_reach_the_guidance(tiny_dir):
    _, o = run(tiny_dir, estimator="csd", gradient_options={"grad_latent_norm": True})
    torch.testing.assert_close(o.gradients.flatten(1).norm(dim=1), torch.ones(2))
