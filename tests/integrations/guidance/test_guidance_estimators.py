"""The DreamWaltz guidance with the step-dependent estimators (annealed CSD, SDS-Bridge), the
source prompt, the gradient options and the CFG-scale schedule, on a tiny random SD."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from ssd_toolkit.estimators import SDS_BRIDGE_SOURCE_MODIFIER  # noqa: E402
from ssd_toolkit.integrations.guidance.controlnet import ControlNetGuidance  # noqa: E402

B, H = 2, 8
T = torch.tensor([150, 650])


def step_inputs(g):
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(B, 4, H, H, generator=gen)
    noise = torch.randn(B, 4, H, H, generator=gen)
    cond, uncond = g.encode_prompts(["a dancer"] * B), g.encode_prompts([""] * B)
    return latents, cond, uncond, torch.rand(B, 3, 64, 64, generator=gen), noise


def unet_batches(unet):
    sizes = []
    return sizes, unet.register_forward_hook(lambda mod, args, out: sizes.append(int(args[0].shape[0])))


@pytest.mark.parametrize("step", [0, 300, 1000])
def test_annealed_csd_three_branches_one_call(models, step):
    g = ControlNetGuidance(models, estimator="csd-annealed", negative_prompt="blurry")
    latents, cond, uncond, conditions, noise = step_inputs(g)
    sizes, hook = unet_batches(models.unet)
    out = g.guide(latents, cond, uncond, conditions, train_step=step, max_iteration=1000, t=T, noise=noise)
    hook.remove()
    assert sizes == [3 * B]
    p = step / 1000
    want = out.eps_cond - 0.5 * p * out.eps_uncond - (1 - 0.5 * p) * out.eps_negative
    torch.testing.assert_close(out.gradients, want, rtol=1e-5, atol=1e-6)


# the tiny tokenizer is one token per byte: the source prompt's modifier passes 77 (a true warning there)
@pytest.mark.filterwarnings("ignore::ssd_toolkit.integrations.guidance.prompts.PromptTruncatedWarning")
def test_sds_bridge_stages_and_source_prompt(models):
    source = "a dancer, " + SDS_BRIDGE_SOURCE_MODIFIER
    g = ControlNetGuidance(
        models, estimator="sds-bridge", estimator_params={"stage_two_start_step": 10, "guidance_scale": 20.0},
        source_prompt=source,
    )
    latents, cond, uncond, conditions, noise = step_inputs(g)
    one = g.guide(latents, cond, uncond, conditions, train_step=9, t=T, noise=noise)
    torch.testing.assert_close(one.gradients, one.eps_uncond + 20.0 * (one.eps_cond - one.eps_uncond) - noise,
                               rtol=1e-5, atol=1e-5)
    sizes, hook = unet_batches(models.unet)
    two = g.guide(latents, cond, None, conditions, train_step=10, t=T, noise=noise)  # no uncond needed
    hook.remove()
    assert sizes == [2 * B] and two.eps_uncond is None
    src = g.encode_prompts([source] * B)
    explicit = g.guide(latents, cond, None, conditions, train_step=10, t=T, noise=noise, text_negative=src)
    torch.testing.assert_close(two.gradients, two.eps_cond - two.eps_negative)
    torch.testing.assert_close(two.gradients, explicit.gradients)


def test_gradient_options_and_guidance_schedule(models):
    g = ControlNetGuidance(models, estimator="sds", guidance_scale=50.0, guidance_adjust="linear",
                           gradient_options={"grad_clip": 0.05})
    latents, cond, uncond, conditions, noise = step_inputs(g)
    out = g.guide(latents, cond, uncond, conditions, train_step=51, max_iteration=101, t=T, noise=noise)
    s = 50.0 - 50 * (50.0 - 7.5) / 100  # DreamWaltz's linear schedule, 1-based steps
    raw = out.eps_uncond + s * (out.eps_cond - out.eps_uncond) - noise
    assert raw.abs().max() > 0.05
    torch.testing.assert_close(out.gradients, raw.clamp(-0.05, 0.05), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"max_iteration: guidance_adjust='linear' needs the run length, got None"):
        g.guide(latents, cond, uncond, conditions, train_step=3)
    with pytest.raises(TypeError, match=r"gradient_options: expected a GradientOptions or a dict, got 3"):
        ControlNetGuidance(models, gradient_options=3)
    with pytest.raises(ValueError, match=r"guidance_adjust: expected one of"):
        ControlNetGuidance(models, guidance_adjust="cosine")


def test_grad_latent_norm_is_unit_per_sample(models):
    g = ControlNetGuidance(models, estimator="csd", gradient_options={"grad_latent_norm": True})
    latents, cond, uncond, conditions, noise = step_inputs(g)
    out = g.guide(latents, cond, uncond, conditions, t=T, noise=noise)
    np.testing.assert_allclose(out.gradients.flatten(1).norm(dim=1).numpy(), 1.0, rtol=1e-5)


def test_ism_inverts_with_the_uncond_unet_and_reports_its_calls(models):
    g = ControlNetGuidance(models, estimator="ism", weighting="ism")
    latents, cond, uncond, conditions, noise = step_inputs(g)
    t = torch.tensor([300, 300])  # s = 220: inversion 0 -> 200 -> 220, then s -> t
    sizes, hook = unet_batches(models.unet)
    out = g.guide(latents, cond, uncond, conditions, t=t, noise=noise)
    hook.remove()
    assert sizes == [B, B, B, 2 * B] and out.diagnostics["unet_calls"] == 4.0

    def eps_uncond(x, tt):
        return g.predict_noise(x, tt, uncond)

    x_t, target, _ = g.estimator.noisy_input(eps_uncond, latents, noise, t, g.alphas_cumprod)
    torch.testing.assert_close(out.latents_noisy, x_t)
    torch.testing.assert_close(out.noise, target)
    abar = g.alphas_cumprod[t].view(B, 1, 1, 1)
    w = ((1 - abar) / abar).sqrt()
    want = w * (out.eps_uncond + 7.5 * (out.eps_cond - out.eps_uncond) - target)
    torch.testing.assert_close(out.gradients, want, rtol=1e-5, atol=1e-6)
