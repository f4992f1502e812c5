"""DreamWaltz's trainer calls, replayed against the drop-in guidance on the tiny pipeline.

Each test replays what DreamWaltz's ``core/trainer.py`` (commit in
``dreamwaltz_compat.DREAMWALTZ_COMMIT``) does with its guidance: the constructor keywords,
``parameters()``, ``get_text_embeds``, ``estimate`` with the trainer's keywords and
``backward=False``, the in-place ``gradients *=``, ``latents.backward(gradient=...,
retain_graph=True)`` followed by another loss's backward, ``t.item()``, and the snapshot's
``decode_latents``. DreamWaltz's code is not used (``dreamwaltz_trainer``: its config and calls).
"""

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from dreamwaltz_trainer import S, TEXT, DreamWaltzGuideConfig, build, pose_image, trainer_step  # noqa: E402

from ssd_toolkit.integrations.dreamwaltz import (  # noqa: E402
    ControllableScoreDistillationSampling,
    register_guide_fields,
)


def reference_step(g, x, seed, scale, weight):
    """DreamWaltz's SDS step written out from its source with the same draws: t, then the
    noise; one ControlNet + UNet call on [uncond; cond]; w(t) (eps_cfg - noise)."""
    torch.manual_seed(seed)
    t = torch.randint(g.get_timestep.min_step, g.get_timestep.max_step + 1, [x.shape[0]], dtype=torch.long)
    noise = torch.randn_like(x)
    abar = g.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x.detach() + (1 - abar).sqrt() * noise
    uc, c = g.get_text_embeds([TEXT], concat=False)
    from PIL import Image

    image = np.asarray(pose_image().resize((S * 8, S * 8), resample=Image.Resampling.LANCZOS), dtype=np.float32)
    cond = torch.from_numpy(image / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        down, mid = g.controlnet(torch.cat([x_t] * 2), t, encoder_hidden_states=torch.cat([uc, c]),
                                 controlnet_cond=[cond], conditioning_scale=[1.0], return_dict=False)
        eps = g.unet(torch.cat([x_t] * 2), t, encoder_hidden_states=torch.cat([uc, c]),
                     down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    eps_u, eps_c = eps.chunk(2)
    eps_cfg = eps_u + scale * (eps_c - eps_u)
    return t, noise, x_t, eps_cfg, weight(abar) * (eps_cfg - noise)


# ------------------------------------------------------------------ construction


def test_trainer_constructor_keywords_parameters_and_attributes(tiny_dir):
    with pytest.warns(UserWarning, match="guide.grad_norm=True"):  # DreamWaltz's default with SSD
        g = build(tiny_dir)
    params = list(g.parameters())
    assert sum(p.numel() for p in params) > sum(p.numel() for p in g.unet.parameters())
    assert not any(p.requires_grad for p in params)
    assert type(g.controlnet).__name__ == "MultiControlNetModel" and len(g.controlnet.nets) == 1
    assert g.condition_type == ["pose"] and g.latent_mode and g.weight_mode == "sjc"
    assert g.guidance_adjust == "constant" and g.guidance_scale == 50.0
    abar = torch.as_tensor(g._ddpm.alphas_cumprod)
    torch.testing.assert_close(g.alphas_cumprod, abar.float())  # Trainer's lr 'lambda' policy reads it
    assert 0.99 < g.alphas_cumprod[0].item() and g.alphas_cumprod[999].item() < 0.01
    torch.testing.assert_close(g.alphas, 1 - g.betas)
    torch.testing.assert_close(g.alphas_cumprod, torch.cumprod(g.alphas.double(), 0).float())
    assert g.guidance.estimator.name == "ssd" and g.guidance.estimator.M == 200.0


def test_text_embeddings_as_get_text_embeds(tiny_dir):
    g = build(tiny_dir, grad_norm=False)
    uc, c = g.get_text_embeds([TEXT], concat=False)
    assert uc.shape == c.shape == (1, 77, 32)
    torch.testing.assert_close(g.get_text_embeds([TEXT]), torch.cat([uc, c]))
    ids = g.tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    torch.testing.assert_close(uc, g.text_encoder(ids)[0])
    assert not torch.allclose(uc, c)


# ------------------------------------------------------------------ the training step


@pytest.mark.parametrize("B", [1, 2])
def test_trainer_step_backward_false_then_retained_graph(tiny_dir, B):
    g = build(tiny_dir, grad_norm=False)
    nerf = torch.nn.Parameter(torch.randn(B, 4, S, S))
    torch.manual_seed(0)
    pred = nerf * 1.0
    sparsity = (pred**2).mean()  # another loss on the same graph, as the trainer's sparsity loss
    out = trainer_step(g, pred, B=B, lambda_guidance=2.0)
    assert set(out) >= {"latents", "latents_denoise", "gradients", "noise_residual", "t"}
    assert nerf.grad is None  # backward=False
    assert out["latents"] is pred and out["gradients"].dtype == torch.float32
    for key in ("gradients", "noise_residual", "latents_denoise"):
        assert out[key].shape == (B, 4, S, S) and not out[key].requires_grad
    assert out["t"].shape == (B,) and out["t"].dtype == torch.long
    if B == 1:
        assert isinstance(out["t"].item(), int)  # logger.info(f"t={t.item():04d}")
    out["latents"].backward(gradient=out["gradients"], retain_graph=True)
    sparsity.backward()  # needs the retained graph
    torch.testing.assert_close(nerf.grad, out["gradients"] + 2 * nerf.detach() / nerf.numel())


@pytest.mark.parametrize("M", [0.0, 999.0])  # t in [20, 980]: every t > 0, every t <= 999
def test_ssd_gradient_is_algorithm_1_on_the_step(tiny_dir, M):
    g = build(tiny_dir, grad_norm=False, loss_type="dreamfusion", ssd_M=M)
    x = torch.randn(1, 4, S, S)
    t, noise, x_t, _, _ = reference_step(g, x, seed=3, scale=50.0, weight=lambda a: 1 - a)
    torch.manual_seed(3)
    out = trainer_step(g, x.clone().requires_grad_(True))
    assert torch.equal(out["t"], t)
    abar = g.alphas_cumprod[t]
    E = out["noise_residual"]
    torch.testing.assert_close(out["gradients"], (1 - abar).view(1, 1, 1, 1) * E)
    # the step's UNet outputs, recomputed, then Algorithm 1 written out
    eps_u, eps_c = g.guidance.predict_noise(
        torch.cat([x_t] * 2), torch.cat([t] * 2), g.get_text_embeds([TEXT]),
        [g.prepare_image(pose_image(), 64, 64, 2, 1, "cpu", torch.float32)], 1.0).chunk(2)
    h = (eps_c - eps_u).double()
    if int(t) > M:
        expected = h
    else:
        c, n = eps_c.double(), noise.double()
        eps_tilde = c - (c * n).sum() / (n * n).sum() * n
        expected = h.norm() / eps_tilde.norm() * eps_tilde
    torch.testing.assert_close(E.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "loss_type, weight",
    [("sjc", lambda a: torch.ones_like(a)), ("stable-dreamfusion", lambda a: 1 - a),
     ("latent-nerf", lambda a: (1 - a) * a.sqrt())],
)
def test_sds_estimator_reproduces_dreamwaltz_step(tiny_dir, loss_type, weight):
    g = build(tiny_dir, estimator="sds", loss_type=loss_type, grad_norm=False)
    x = torch.randn(1, 4, S, S)
    t, _, x_t, eps_cfg, grad = reference_step(g, x, seed=7, scale=50.0, weight=weight)
    torch.manual_seed(7)
    out = trainer_step(g, x.clone().requires_grad_(True))
    assert torch.equal(out["t"], t)
    torch.testing.assert_close(out["gradients"], grad, rtol=1e-3, atol=2e-4)  # scale 50 amplifies float32 rounding
    # latents_denoise: one DDPM reverse step, the posterior mean written from x0 and x_t
    abar, abar_prev = g.alphas_cumprod[t], g.alphas_cumprod[t - 1]
    beta = 1 - abar / abar_prev
    x0 = (x_t - (1 - abar).sqrt() * eps_cfg) / abar.sqrt()
    mean = abar_prev.sqrt() * beta / (1 - abar) * x0 + (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar) * x_t
    torch.testing.assert_close(out["latents_denoise"], mean, rtol=1e-4, atol=1e-4)


def test_grad_norm_and_grad_clip_as_dreamwaltz(tiny_dir):
    x = torch.randn(1, 4, S, S)
    plain = build(tiny_dir, estimator="sds", grad_norm=False)
    torch.manual_seed(1)
    ref = trainer_step(plain, x.clone().requires_grad_(True))
    clip = build(tiny_dir, estimator="sds", grad_norm=False, grad_clip=True)
    torch.manual_seed(1)
    torch.testing.assert_close(trainer_step(clip, x.clone().requires_grad_(True))["gradients"],
                               ref["gradients"].clamp(-1, 1))
    assert float(ref["gradients"].abs().max()) > 1  # the clamp did something
    norm = build(tiny_dir, estimator="sds", grad_norm=True, grad_clip=True)  # grad_norm wins, as DreamWaltz
    torch.manual_seed(1)
    out = trainer_step(norm, x.clone().requires_grad_(True))
    torch.testing.assert_close(out["gradients"], ref["noise_residual"] / ref["noise_residual"].norm())


def test_sjc_v2_gradient_is_the_cfg_prediction(tiny_dir):
    g = build(tiny_dir, estimator="sds", loss_type="sjc-v2", grad_norm=False)
    x = torch.randn(1, 4, S, S)
    _, noise, _, eps_cfg, _ = reference_step(g, x, seed=2, scale=50.0, weight=lambda a: a)
    torch.manual_seed(2)
    out = trainer_step(g, x.clone().requires_grad_(True))
    torch.testing.assert_close(out["gradients"], eps_cfg, rtol=1e-3, atol=2e-4)
    torch.testing.assert_close(out["noise_residual"], eps_cfg - noise, rtol=1e-3, atol=2e-4)


def test_guidance_adjust_sets_the_sds_scale_per_step(tiny_dir):
    g = build(tiny_dir, estimator="sds", guidance_adjust="linear", grad_norm=False)
    x = torch.randn(1, 4, S, S)
    for step, scale in ((1, 50.0), (11, 7.5)):
        *_, grad = reference_step(g, x, seed=5, scale=scale, weight=torch.ones_like)
        torch.manual_seed(5)
        out = trainer_step(g, x.clone().requires_grad_(True), train_step=step, max_step=11)
        torch.testing.assert_close(out["gradients"], grad, rtol=1e-3, atol=2e-4)  # scale 50 amplifies float32 rounding


def test_rgb_mode_encodes_in_the_graph(tiny_dir):
    g = build(tiny_dir, latent_mode=False, grad_norm=False)
    rgb = torch.nn.Parameter(torch.rand(1, 3, 32, 32))
    out = trainer_step(g, rgb * 1.0)
    assert out["latents"].shape == (1, 4, S, S) and out["latents"].requires_grad
    out["latents"].backward(gradient=out["gradients"])
    assert rgb.grad is not None and float(rgb.grad.abs().sum()) > 0


def test_backward_true_retains_the_graph(tiny_dir):
    g = build(tiny_dir, grad_norm=False)
    nerf = torch.nn.Parameter(torch.randn(1, 4, S, S))
    pred = nerf * 1.0
    uc, c = g.get_text_embeds([TEXT], concat=False)
    out = g.estimate(torch.cat([uc, c]), pred, 1, 2, cond_inputs=[pose_image()], backward=True)
    torch.testing.assert_close(nerf.grad, out["gradients"])
    pred.sum().backward()  # the graph is still there
    torch.testing.assert_close(nerf.grad, out["gradients"] + 1)


def test_two_condition_types_use_a_multi_controlnet(tiny_dir):
    g = build(tiny_dir, condition_type=("depth", "pose"), grad_norm=False)
    assert len(g.controlnet.nets) == 2
    x = torch.randn(1, 4, S, S)
    torch.manual_seed(0)
    a = trainer_step(g, x.clone().requires_grad_(True), cond=[pose_image(1), pose_image(2)])
    torch.manual_seed(0)
    b = trainer_step(g, x.clone().requires_grad_(True), cond=[pose_image(3), pose_image(2)])
    assert torch.equal(a["t"], b["t"]) and not torch.allclose(a["gradients"], b["gradients"])
    with pytest.raises(ValueError, match=r"cond_inputs: expected 2 conditions \(one per condition_type"):
        trainer_step(g, x.clone(), cond=[pose_image(1)])


# ------------------------------------------------------------- snapshots and sampling


def test_decode_and_encode_images(tiny_dir):
    g = build(tiny_dir, grad_norm=False)
    img = g.decode_latents(torch.randn(2, 4, S, S))
    assert img.shape == (2, 3, 64, 64) and img.dtype == torch.float32
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    assert g.decode_latents(torch.randn(1, 4, S, S), to_uint8=True).dtype == torch.uint8
    assert g.decode_latents(torch.randn(1, 4, S, S), to_numpy=True).shape == (1, 64, 64, 3)
    rgb = torch.rand(1, 3, 64, 64, requires_grad=True)
    z = g.encode_images(rgb)
    assert z.shape == (1, 4, S, S) and z.requires_grad
    torch.manual_seed(0)
    again = g.encode_images(rgb)
    torch.manual_seed(0)
    torch.testing.assert_close(g.encode_images(rgb), again)  # the sample uses torch's global generator


def test_image_sampling_through_diffusers_pipelines(tiny_dir):
    g = build(tiny_dir, grad_norm=False)
    uc, c = g.get_text_embeds([TEXT], concat=False)
    text = torch.cat((uc.expand(3, -1, -1), c.expand(3, -1, -1)))
    images = g.batched_prompt_to_img(text, batch_size=2, height=64, width=64, num_inference_steps=2, guidance_scale=7.5)
    assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8
    control = g.batch_prompt_control_to_img(TEXT, [pose_image()], height=64, width=64, num_inference_steps=2,
                                            guidance_scale=12.5, controlnet_conditioning_scale=[1.0])
    assert control.shape == (1, 64, 64, 3) and control.dtype == np.uint8


# ------------------------------------------------------------- config fields and errors


def test_guide_fields_registered_on_the_config_dataclass():
    names = [f.name for f in dataclasses.fields(DreamWaltzGuideConfig)]
    assert names[-4:] == ["estimator", "ssd_M", "negative_prompt", "source_prompt"] and names[0] == "text"
    cfg = DreamWaltzGuideConfig()
    assert cfg.estimator == "ssd" and cfg.ssd_M == 200.0 and cfg.grad_norm is True
    assert register_guide_fields(DreamWaltzGuideConfig) is DreamWaltzGuideConfig  # idempotent
    assert DreamWaltzGuideConfig(estimator="sds", text="x").estimator == "sds"
    pyrallis = pytest.importorskip("pyrallis")

    @dataclass
    class TrainConfig:
        guide: DreamWaltzGuideConfig = dataclasses.field(default_factory=DreamWaltzGuideConfig)

    parsed = pyrallis.parse(config_class=TrainConfig, args=["--guide.estimator", "csd", "--guide.ssd_M", "50"])
    assert parsed.guide.estimator == "csd" and parsed.guide.ssd_M == 50.0


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"control_mode": 1}, TypeError, r"unexpected keyword arguments \['control_mode'\]"),
        ({"concept_name": "<cat>"}, ValueError, r"concept_name: textual-inversion concepts are unsupported"),
        ({"weight_mode": "mse"}, ValueError, r"guide.loss_type \(weight_mode\): expected one of"),
        ({"guide": {"estimator": "foo"}}, ValueError, r"guide.estimator: expected one of \[.*'ssd'.*\], got 'foo'"),
        ({"guide": {"loss_type": "sjc-v2"}}, ValueError, r"guide.loss_type: 'sjc-v2' .* got guide.estimator 'ssd'"),
        ({"guide": {"guidance_adjust": "cosine"}}, ValueError, r"guide.guidance_adjust: expected one of"),
        ({"guide": {"time_sampling": "exp"}}, ValueError, r"guide.time_sampling: expected one of"),
        ({"guide": {"min_timestep": 0.9, "max_timestep": 0.1}}, ValueError, r"guide.min_timestep, guide.max_timestep"),
        ({"condition_type": ["mesh"], "model_name": "v1.5"}, ValueError, r"condition_type: expected entries among"),
    ],
)
def test_unsupported_options_raise_one_clear_error(tiny_dir, kwargs, error, message):
    guide = {"grad_norm": False, **kwargs.pop("guide", {})}
    cfg = DreamWaltzGuideConfig(diffusion_name=tiny_dir, **guide)
    args = dict(device="cpu", model_name=tiny_dir, weight_mode=cfg.loss_type, guide_cfg=cfg, fp16=False)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        ControllableScoreDistillationSampling(**args)


def test_bad_estimate_inputs_name_the_argument(tiny_dir):
    g = build(tiny_dir, grad_norm=False)
    text = g.get_text_embeds([TEXT])
    with pytest.raises(ValueError, match=r"inputs: expected latents \(latent_mode=True\) with 4 channels"):
        g.estimate(text, torch.zeros(1, 3, S, S), 1, 2, cond_inputs=[pose_image()])
    with pytest.raises(ValueError, match=r"text_embeddings: expected \[2N, 77, D\] = \[4, 77, D\]"):
        g.estimate(torch.zeros(3, 77, 32), torch.zeros(2, 4, S, S), 1, 2, cond_inputs=[pose_image()])
