"""ControlNet guidance with SSD on a tiny random SD + ControlNet, saved and loaded offline."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import ssd_toolkit  # noqa: E402
from ssd_toolkit.integrations.guidance.controlnet import ControlNetGuidance, load_guidance  # noqa: E402
from ssd_toolkit.integrations.guidance.prompts import view_prompts  # noqa: E402

H = W = 8  # tiny latent side; images are 64x64


def make(models, **kw):
    return ControlNetGuidance(models, **kw)


def inputs(g, B, seed=0):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(B, 4, H, W, generator=gen)
    cond = g.encode_prompts(view_prompts("a man", [90.0] * B, np.linspace(0, 270, B)))
    uncond = g.encode_prompts([""] * B)
    conditions = torch.rand(B, 3, 64, 64, generator=gen)
    return latents, cond, uncond, conditions


class UNetBatchCounter:
    """Records the batch size of every UNet forward."""

    def __init__(self, unet):
        self.sizes = []
        self.handle = unet.register_forward_hook(lambda mod, args, out: self.sizes.append(int(args[0].shape[0])))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ------------------------------------------------------------------------- guide()


@pytest.mark.parametrize("B", [1, 4])
def test_guide_shapes_dtypes_and_loss_convention(models, B):
    g = make(models)
    latents, cond, uncond, conditions = inputs(g, B)
    latents.requires_grad_(True)
    out = g.guide(latents, cond, uncond, conditions, train_step=0, max_iteration=100)
    assert out.gradients.shape == (B, 4, H, W) and out.gradients.dtype == torch.float32
    assert out.t.shape == (B,) and out.t.dtype == torch.long
    assert int(out.t.min()) >= 20 and int(out.t.max()) <= 980
    for x in (out.noise, out.latents_noisy, out.eps_cond, out.eps_uncond, out.estimate):
        assert x.shape == (B, 4, H, W) and x.dtype == torch.float32
    assert out.eps_negative is None
    assert out.loss.ndim == 0 and out.loss.dtype == torch.float32
    out.loss.backward()
    torch.testing.assert_close(latents.grad, out.gradients / B)
    d = out.diagnostics
    assert d["t_min"] == int(out.t.min()) and d["t_max"] == int(out.t.max())
    per_sample = out.gradients.flatten(1).norm(dim=1)
    assert d["grad_norm"] == pytest.approx(float(per_sample.mean()), rel=1e-5)
    assert d["grad_norm_applied"] == pytest.approx(float(per_sample.mean()), rel=1e-5)
    for b in range(B):
        assert d[f"grad_norm/{b}"] == pytest.approx(float(per_sample[b]), rel=1e-5)
    assert d["nonfinite"] == 0
    for key in ("h_norm", "r", "scale", "frac_mode_seeking", "eps_cond_norm", "eps_uncond_norm"):
        assert np.isfinite(d[key]), key


def test_ssd_matches_the_estimator_on_the_unet_outputs(models):
    g = make(models, estimator="ssd", estimator_params={"M": 500}, weighting="sds")
    latents, cond, uncond, conditions = inputs(g, 4)
    t = torch.tensor([100, 400, 600, 900])
    out = g.guide(latents, cond, uncond, conditions, t=t)
    assert torch.equal(out.t, t)
    E = ssd_toolkit.estimate(out.eps_cond, out.eps_uncond, out.noise, t, 500.0)
    abar = models.scheduler.alphas_cumprod[t].float()
    torch.testing.assert_close(out.weights, 1 - abar)
    torch.testing.assert_close(out.gradients, (1 - abar).view(4, 1, 1, 1) * E)
    torch.testing.assert_close(out.gradients[2:], (1 - abar[2:]).view(2, 1, 1, 1) * (out.eps_cond - out.eps_uncond)[2:])
    assert out.diagnostics["frac_mode_seeking"] == 0.5
    # x_t = sqrt(abar) x + sqrt(1 - abar) noise, per sample
    expect = abar.sqrt().view(4, 1, 1, 1) * latents + (1 - abar).sqrt().view(4, 1, 1, 1) * out.noise
    torch.testing.assert_close(out.latents_noisy, expect)


def test_batch_equals_one_by_one_with_per_sample_t_conditions_and_views(models):
    g = make(models)
    latents, cond, uncond, conditions = inputs(g, 3)
    t = torch.tensor([50, 500, 950])
    noise = torch.randn(3, 4, H, W, generator=torch.Generator().manual_seed(1))
    batched = g.guide(latents, cond, uncond, conditions, t=t, noise=noise)
    for b in range(3):
        s = slice(b, b + 1)
        single = g.guide(latents[s], cond[s], uncond[s], conditions[s], t=t[s], noise=noise[s])
        torch.testing.assert_close(single.gradients, batched.gradients[s], rtol=1e-4, atol=1e-5)
    # a different condition image for sample 1 changes sample 1 only
    other = conditions.clone()
    other[1] = 1.0 - other[1]
    changed = g.guide(latents, cond, uncond, other, t=t, noise=noise)
    diff = (changed.eps_cond - batched.eps_cond).flatten(1).abs().amax(1)
    assert diff[1] > 1e-4
    assert float(diff[0]) < 1e-5 and float(diff[2]) < 1e-5


def test_condition_batch_one_is_repeated_and_controlnet_matters(models):
    g = make(models)
    latents, cond, uncond, conditions = inputs(g, 4)
    t, noise = torch.full((4,), 300), torch.randn(4, 4, H, W)
    one = g.guide(latents, cond, uncond, conditions[:1], t=t, noise=noise)
    rep = g.guide(latents, cond, uncond, conditions[:1].repeat(4, 1, 1, 1), t=t, noise=noise)
    torch.testing.assert_close(one.gradients, rep.gradients)
    # a 512x512 condition is resized to the 64x64 the latents need
    big = torch.nn.functional.interpolate(conditions[:1], size=(512, 512), mode="nearest")
    assert g.guide(latents, cond, uncond, big, t=t, noise=noise).gradients.shape == (4, 4, H, W)
    plain = g.guide(latents, cond, uncond, None, t=t, noise=noise)
    assert not torch.allclose(plain.eps_cond, one.eps_cond)


def test_one_batched_unet_call_per_step_with_the_declared_branches(models):
    latents_b = 3
    cases = {"ssd": 2, "sds": 2, "csd": 2, "mode-seeking": 1, "nfsd": 3}
    for name, k in cases.items():
        g = make(models, estimator=name)
        latents, cond, uncond, conditions = inputs(g, latents_b)
        with UNetBatchCounter(models.unet) as unet_calls, UNetBatchCounter(models.controlnet) as cn_calls:
            out = g.guide(latents, cond, uncond, conditions)
        assert unet_calls.sizes == [k * latents_b], name
        assert cn_calls.sizes == [k * latents_b], name
        assert (out.eps_negative is not None) == (name == "nfsd")
        assert (out.eps_uncond is not None) == (k >= 2)


def test_estimator_switch_gives_the_estimators_gradients(models):
    latents, cond, uncond, conditions = inputs(make(models), 2)
    t, noise = torch.tensor([100, 700]), torch.randn(2, 4, H, W)
    outs = {}
    for name in ("ssd", "sds", "csd"):
        g = make(models, estimator=name, guidance_scale=50.0)
        outs[name] = g.guide(latents, cond, uncond, conditions, t=t, noise=noise)
    c, u = outs["ssd"].eps_cond, outs["ssd"].eps_uncond
    torch.testing.assert_close(outs["csd"].gradients, c - u)
    torch.testing.assert_close(outs["sds"].gradients, u + 50.0 * (c - u) - noise, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs["ssd"].gradients, ssd_toolkit.estimate(c, u, noise, t, 200.0))
    assert not torch.allclose(outs["ssd"].gradients, outs["csd"].gradients)
    assert not torch.allclose(outs["ssd"].gradients, outs["sds"].gradients)


def test_negative_prompt_feeds_the_negative_branch(models):
    g = make(models, estimator="nfsd", negative_prompt="blurry, low quality")
    latents, cond, uncond, conditions = inputs(g, 2)
    out = g.guide(latents, cond, uncond, conditions, t=torch.tensor([500, 500]))
    neg = g.encode_prompts(["blurry, low quality"] * 2)
    explicit = g.guide(latents, cond, uncond, conditions, t=torch.tensor([500, 500]), noise=out.noise, text_negative=neg)
    torch.testing.assert_close(out.gradients, explicit.gradients)
    assert not torch.allclose(out.eps_negative, out.eps_uncond)


def test_grad_norm_option_normalises_per_sample_and_warns_for_ssd(models):
    with pytest.warns(UserWarning, match="erases SSD's"):
        make(models, estimator="ssd", grad_norm=True)
    g = make(models, estimator="sds", grad_norm=True)
    latents, cond, uncond, conditions = inputs(g, 3)
    out = g.guide(latents, cond, uncond, conditions)
    torch.testing.assert_close(out.gradients.flatten(1).norm(dim=1), torch.ones(3))


def test_nonfinite_latents_are_reported_not_zeroed(models):
    g = make(models, estimator="csd")
    latents, cond, uncond, conditions = inputs(g, 2)
    latents[1, 0, 0, 0] = float("nan")
    out = g.guide(latents, cond, uncond, conditions, t=torch.tensor([500, 500]))
    assert out.diagnostics["nonfinite"] > 0
    assert bool(torch.isfinite(out.gradients[0]).all())
    assert not bool(torch.isfinite(out.gradients[1]).all())


def test_same_seed_same_step(models):
    a, b = make(models, seed=7), make(models, seed=7)
    latents, cond, uncond, conditions = inputs(a, 2)
    out_a = a.guide(latents, cond, uncond, conditions, train_step=5)
    out_b = b.guide(latents, cond, uncond, conditions, train_step=5)
    assert torch.equal(out_a.t, out_b.t) and torch.equal(out_a.gradients, out_b.gradients)
    assert not torch.equal(out_a.noise, a.guide(latents, cond, uncond, conditions).noise)


def test_the_guidance_leaves_the_kernel_missing_policy_to_estimate():
    """No host restates what runs without a kernel: SSD keeps backend='auto', and estimate's
    policy (engine.dispatch.kernel_or_fallback) decides per call."""
    from ssd_toolkit.integrations.guidance import controlnet as guidance

    assert guidance._resolve_estimator("ssd", None, 50.0).backend == "auto"
    assert guidance._resolve_estimator("ssd", {"M": 100, "backend": "torch"}, 50.0).backend == "torch"


def test_encode_prompts_caches_by_string(models):
    g = make(models)
    a = g.encode_prompts(["front view of a man", ""])
    assert a.shape == (2, 77, 32)
    assert set(g._prompt_cache) == {"front view of a man", ""}
    b = g.encode_prompts(["", "front view of a man"])
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[0])
    assert not torch.equal(a[0], a[1])


def test_rgb_input_goes_through_the_vae(models):
    g = make(models)
    rgb = torch.rand(2, 3, 32, 32, requires_grad=True)  # resized to the VAE's 64x64
    latents = g.encode_rgb(rgb)
    assert latents.shape == (2, 4, H, W)
    latents.sum().backward()
    assert rgb.grad is not None and float(rgb.grad.abs().sum()) > 0


def test_errors_name_the_argument(models):
    g = make(models)
    latents, cond, uncond, conditions = inputs(g, 2)
    with pytest.raises(ValueError, match="latents: expected 4 channels"):
        g.guide(torch.zeros(2, 3, H, W), cond, uncond)
    with pytest.raises(ValueError, match="text_uncond: estimator .* needs the 'uncond' branch, got None"):
        g.guide(latents, cond, None)
    with pytest.raises(ValueError, match=r"conditions: expected batch 2 \(or 1, repeated\), got shape \[3, 3, 64, 64\]"):
        g.guide(latents, cond, uncond, torch.rand(3, 3, 64, 64))
    with pytest.raises(ValueError, match=r"conditions: expected \[N, 3, H, W\] or \[3, H, W\] images, got shape \[2, 1, 64, 64\]"):
        g.guide(latents, cond, uncond, torch.rand(2, 1, 64, 64))
    with pytest.raises(ValueError, match=r"t: expected timesteps in \[0, 999\], got min 5 max 1000"):
        g.guide(latents, cond, uncond, t=torch.tensor([5, 1000]))
    with pytest.raises(ValueError, match="name: expected one of"):
        make(models, estimator="nope")


# ------------------------------------------------------------------------- fp16


def test_fp16_models_fp32_estimator(tiny_dir):
    g = load_guidance(tiny_dir, tiny_dir / "controlnet", dtype=torch.float16)
    latents, cond, uncond, conditions = inputs(g, 2)
    assert cond.dtype == torch.float16
    try:
        out = g.guide(latents.half(), cond, uncond, conditions, t=torch.tensor([100, 800]))
    except RuntimeError as exc:  # some CPU builds lack half kernels (e.g. conv2d)
        if "Half" in str(exc) or "not implemented" in str(exc):
            pytest.skip(f"fp16 not supported on this CPU build: {exc}")
        raise
    assert out.gradients.dtype == torch.float16
    assert out.estimate.dtype == torch.float32 and out.eps_cond.dtype == torch.float32
    assert bool(torch.isfinite(out.gradients).all())
    g32 = load_guidance(tiny_dir, tiny_dir / "controlnet")
    ref = g32.guide(latents, cond.float(), uncond.float(), conditions, t=torch.tensor([100, 800]), noise=out.noise)
    torch.testing.assert_close(out.estimate, ref.estimate, rtol=5e-2, atol=5e-2)


# ------------------------------------------------------------ multi-ControlNet


def test_multi_controlnet_conditions_one_per_net(models):
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    single = make(models)
    latents, cond, uncond, conditions = inputs(single, 2)
    t, noise = torch.tensor([150, 700]), torch.randn(2, 4, H, W)
    ref = single.guide(latents, cond, uncond, conditions, t=t, noise=noise)
    # residuals are linear in the scale: the same net twice at 0.5 each is the net once at 1.0
    twice = dataclasses.replace(models, controlnet=MultiControlNetModel([models.controlnet, models.controlnet]))
    multi = make(twice)
    out = multi.guide(latents, cond, uncond, [conditions, conditions], t=t, noise=noise,
                      controlnet_conditioning_scale=[0.5, 0.5])
    torch.testing.assert_close(out.eps_cond, ref.eps_cond, rtol=1e-4, atol=1e-5)
    other = multi.guide(latents, cond, uncond, [conditions, 1 - conditions], t=t, noise=noise)
    assert not torch.allclose(other.eps_cond, ref.eps_cond)
    with pytest.raises(ValueError, match=r"conditions: expected a list of 2 tensors \(one per ControlNet\), got a list of 1"):
        multi.guide(latents, cond, uncond, [conditions], t=t)
    with pytest.raises(ValueError, match=r"controlnet_conditioning_scale: expected a float or 2 floats"):
        multi.guide(latents, cond, uncond, [conditions, conditions], t=t, controlnet_conditioning_scale=[1.0])
    with pytest.raises(ValueError, match=r"conditions: expected one tensor \(one ControlNet is loaded\)"):
        single.guide(latents, cond, uncond, [conditions, conditions], t=t)
