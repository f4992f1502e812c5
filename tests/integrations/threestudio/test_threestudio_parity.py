"""Parity with threestudio's ``stable-diffusion-guidance`` (commit 28d9d80): with ``parity`` on
(the default for ``estimator: sds``), the same global seed gives the same latents, t, noise and
losses step for step. The reference below replays that guidance's draws from its documented
order: RGB resized to 512x512, ``latent_dist.sample()``, ``torch.randint(min, max + 1)``,
``torch.randn_like(latents)``, all from torch's global generator; latents resized to 64x64."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import torch.nn.functional as F  # noqa: E402
from threestudio_fakes import PromptOutput, camera_batch  # noqa: E402

from ssd_toolkit.integrations.threestudio.adapter import ThreestudioGuidance  # noqa: E402


def make(tiny_dir, **cfg):
    return ThreestudioGuidance({"pretrained_model_name_or_path": str(tiny_dir), "half_precision_weights": False, **cfg})


class ThreestudioReplay:
    """threestudio's SDS step on the tiny SD's own networks, float32, no ssd_toolkit code."""

    def __init__(self, tiny_dir, scale):
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from diffusers.models import AutoencoderKL

        self.vae = AutoencoderKL.from_pretrained(str(tiny_dir), subfolder="vae")
        self.unet = UNet2DConditionModel.from_pretrained(str(tiny_dir), subfolder="unet")
        self.abar = DDPMScheduler.from_pretrained(str(tiny_dir), subfolder="scheduler").alphas_cumprod
        self.scale = scale

    def __call__(self, rgb, emb, min_step, max_step, rgb_as_latents=False):
        B = rgb.shape[0]
        bchw = rgb.permute(0, 3, 1, 2)
        with torch.no_grad():
            if rgb_as_latents:
                latents = F.interpolate(bchw, (64, 64), mode="bilinear", align_corners=False)
            else:
                x = F.interpolate(bchw, (512, 512), mode="bilinear", align_corners=False)
                latents = self.vae.encode(x * 2 - 1).latent_dist.sample() * self.vae.config.scaling_factor
            t = torch.randint(min_step, max_step + 1, [B], dtype=torch.long)
            noise = torch.randn_like(latents)
            a = self.abar[t].view(-1, 1, 1, 1)
            x_t = a.sqrt() * latents + (1 - a).sqrt() * noise
            eps = self.unet(torch.cat([x_t] * 2), torch.cat([t] * 2), encoder_hidden_states=emb).sample
            c, u = eps.chunk(2)
            grad = (1 - a) * (c + self.scale * (c - u) - noise)
        return {"loss": 0.5 * (grad**2).sum() / B, "t": t, "noise": noise, "latents": latents}


@pytest.mark.parametrize("rgb_as_latents, B", [(False, 2), (True, 1)])
def test_sds_reproduces_threestudio_run_step_for_step(tiny_dir, rgb_as_latents, B):
    g = make(tiny_dir, estimator="sds", guidance_scale=7.5, max_step_percent=[0, 0.98, 0.5, 3])
    assert g.parity  # "auto" turns it on for SDS
    replay = ThreestudioReplay(tiny_dir, scale=7.5)
    utils = PromptOutput(g.guidance.encode_prompts)
    side, channels = (16, 4) if rgb_as_latents else (64, 3)
    renders = torch.rand(3, B, side, side, channels, generator=torch.Generator().manual_seed(5))
    seed, ours, theirs = 7, [], []
    for run, record in (("ours", ours), ("theirs", theirs)):
        torch.manual_seed(seed)  # threestudio's pl.seed_everything(cfg.seed)
        for step in range(3):
            g.update_step(0, step)
            batch = camera_batch(B, seed=step)
            if run == "ours":
                rgb = renders[step].clone().requires_grad_(True)
                out = g(rgb, utils, **batch, rgb_as_latents=rgb_as_latents)
                record.append({"loss": out["loss_sds"].detach(), "t": g.last_t, "noise": g.last_output.noise})
            else:
                emb = utils.get_text_embeddings(batch["elevation"], batch["azimuth"], batch["camera_distances"])
                record.append(replay(renders[step], emb, g.min_step, g.max_step, rgb_as_latents))
    for a, b in zip(ours, theirs):
        assert torch.equal(a["t"].cpu(), b["t"])
        torch.testing.assert_close(a["noise"], b["noise"], rtol=0, atol=0)
        torch.testing.assert_close(a["loss"], b["loss"], rtol=1e-4, atol=0)
    assert ours[2]["noise"].shape[-1] == 64  # threestudio's latent side, not the tiny UNet's 8
    assert len({float(r["loss"]) for r in ours}) == 3  # three different steps, not one repeated


def test_parity_off_uses_own_generators_and_native_size(tiny_dir):
    g = make(tiny_dir, estimator="sds", parity=False)
    rgb = torch.rand(1, 64, 64, 3)
    state = torch.get_rng_state()
    g(rgb, PromptOutput(g.guidance.encode_prompts), **camera_batch(1))
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    assert g.last_output.noise.shape[-1] == g.guidance.latent_size


def test_parity_for_other_estimators_draws_the_same_t_and_noise(tiny_dir):
    auto = make(tiny_dir, estimator="ssd")
    assert not auto.parity  # "auto" is SDS only
    draws = []
    for estimator in ("sds", "ssd"):
        g = make(tiny_dir, estimator=estimator, parity=True)
        torch.manual_seed(3)
        g(torch.rand(2, 8, 8, 4), PromptOutput(g.guidance.encode_prompts), **camera_batch(2), rgb_as_latents=True)
        draws.append((g.last_t, g.last_output.noise))
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    assert g.decode_latents(torch.randn(1, 4, 8, 8)).shape[-1] == 64 * g.guidance.vae_scale_factor


@pytest.mark.parametrize(
    "cfg, exc, match",
    [
        ({"estimator": "ssdd"}, ValueError,
         r"^system\.guidance\.estimator: expected one of \[.*\], got 'ssdd' \(did you mean 'ssd'\?\)$"),
        ({"estimator": "ssd", "estimator_params": {"m": 100}}, ValueError,
         r"^system\.guidance\.estimator_params: ssd takes \[.*\], got 'm' \(did you mean 'M'\?\)$"),
        ({"estimator": "ssd", "estimator_params": {"M": "x"}}, TypeError,
         r"^system\.guidance\.estimator_params: M: expected a finite real scalar"),
        ({"parity": "yes"}, ValueError, r"^system\.guidance\.parity: expected 'auto', true or false, got 'yes'$"),
        ({"weighting_strategy": "sd"}, ValueError, r"^system\.guidance\.weighting_strategy: .*\(did you mean 'sds'\?\)$"),
        ({"max_step_percent": "high"}, TypeError, r"^system\.guidance\.max_step_percent: expected a number"),
    ],
)
def test_config_errors_name_the_yaml_key_before_loading(tmp_path, cfg, exc, match):
    # a model path that does not exist: the config error must come first, before any loading
    with pytest.raises(exc, match=match):
        ThreestudioGuidance({"pretrained_model_name_or_path": str(tmp_path / "no-model"), **cfg})


def test_unknown_field_suggests_the_closest(tiny_dir):
    with pytest.raises(TypeError, match=r"cfg: unknown field\(s\) \['estimater'\] \(did you mean 'estimator'\?\)"):
        make(tiny_dir, estimater="ssd")
