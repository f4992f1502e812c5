"""ssd-toolkit-guidance against independent references: threestudio's SDS formula, a literal
SSD (Algorithm 1), its scheduled scalars, its registry (a minimal stand-in package), errors."""

import importlib
import sys
import textwrap

import pytest

from ssd_toolkit.integrations.threestudio.__main__ import install, main
from ssd_toolkit.integrations.threestudio.scheduled_value import scheduled_value

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from threestudio_fakes import PromptOutput, camera_batch  # noqa: E402

from ssd_toolkit.integrations.threestudio.adapter import ThreestudioGuidance  # noqa: E402


def make(tiny_dir, **cfg):
    return ThreestudioGuidance({"pretrained_model_name_or_path": str(tiny_dir), "half_precision_weights": False, **cfg})


def unet_eps(tiny_dir, x_t, t, emb):
    """The tiny UNet called directly, float64 out."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(tiny_dir), subfolder="unet")
    with torch.no_grad():
        return unet(x_t, t, encoder_hidden_states=emb).sample.double()


def abar(tiny_dir, t):
    from diffusers import DDPMScheduler

    abar_all = DDPMScheduler.from_pretrained(str(tiny_dir), subfolder="scheduler").alphas_cumprod.double()
    return abar_all[t].view(-1, 1, 1, 1)


def step(g, B, negative_prompt=""):
    """One rgb_as_latents call on 8x8 latents (no resize); returns (latents, prompt output, batch)."""
    utils = PromptOutput(g.guidance.encode_prompts, negative_prompt=negative_prompt)
    batch = camera_batch(B)
    latents = torch.randn(B, 8, 8, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = g(latents, utils, **batch, rgb_as_latents=True)
    out[g.cfg.loss_key].backward()
    return latents, utils, batch, out


def test_sds_matches_threestudio_formula(tiny_dir):
    g = make(tiny_dir, estimator="sds", guidance_scale=7.5, parity=False)  # the formula at the native size
    latents, utils, batch, out = step(g, 3)
    o = g.last_output
    emb = utils.get_text_embeddings(batch["elevation"], batch["azimuth"], batch["camera_distances"])
    c, u = unet_eps(tiny_dir, o.latents_noisy, o.t, emb[:3]), unet_eps(tiny_dir, o.latents_noisy, o.t, emb[3:])
    w = 1 - abar(tiny_dir, o.t)
    grad = w * (c + 7.5 * (c - u) - o.noise.double())  # threestudio: noise_pred_text + s (text - uncond)
    got = latents.grad.permute(0, 3, 1, 2).double() * 3  # dL/dx = grad / B
    torch.testing.assert_close(got, grad, rtol=1e-4, atol=1e-5)
    assert set(out) == {"loss_sds", "grad_norm", "min_step", "max_step"}
    assert float(out["loss_sds"].detach()) == pytest.approx(0.5 * float(grad.pow(2).sum()) / 3, rel=1e-4)


@pytest.mark.parametrize("percent", [(0.02, 0.15), (0.5, 0.98)])  # all t <= M = 200, then all t > M
def test_ssd_matches_algorithm_1(tiny_dir, percent):
    g = make(tiny_dir, min_step_percent=percent[0], max_step_percent=percent[1], loss_key="loss_ssd")
    latents, utils, batch, out = step(g, 2)
    o = g.last_output
    emb = utils.get_text_embeddings(batch["elevation"], batch["azimuth"], batch["camera_distances"])
    c, u = unet_eps(tiny_dir, o.latents_noisy, o.t, emb[:2]), unet_eps(tiny_dir, o.latents_noisy, o.t, emb[2:])
    n = o.noise.double()
    rows = []
    for b in range(2):
        h = c[b] - u[b]
        if int(o.t[b]) > 200:
            rows.append(h)
        else:
            r = (c[b] * n[b]).sum() / (n[b] * n[b]).sum()
            e = c[b] - r * n[b]
            rows.append(h.norm() / e.norm() * e)
    grad = (1 - abar(tiny_dir, o.t)) * torch.stack(rows)
    torch.testing.assert_close(latents.grad.permute(0, 3, 1, 2).double() * 2, grad, rtol=1e-4, atol=1e-5)
    assert "loss_ssd" in out and g.last_diagnostics["frac_mode_seeking"] == (1.0 if percent[1] < 0.2 else 0.0)


def test_nfsd_keeps_null_text_and_negative_prompt_apart(tiny_dir):
    g = make(tiny_dir, estimator="nfsd")
    _, _, _, _ = step(g, 2, negative_prompt="blurry, ugly")
    o = g.last_output
    null, negative = g.guidance.encode_prompts([""] * 2), g.guidance.encode_prompts(["blurry, ugly"] * 2)
    for eps, emb in ((o.eps_uncond, null), (o.eps_negative, negative)):
        torch.testing.assert_close(eps.double(), unet_eps(tiny_dir, o.latents_noisy, o.t, emb), rtol=1e-5, atol=1e-6)
    assert float((o.eps_uncond - o.eps_negative).abs().max()) > 1e-4
    with pytest.warns(UserWarning, match="negative prompt is empty"):
        step(g, 1)


def test_nfsd_empty_negative_warning_under_half_precision_embeddings(tiny_dir, monkeypatch):
    # half_precision_weights=true: threestudio's prompt embeddings are float16, the null text
    # float32; an empty negative prompt must still be recognised (was an exact torch.equal)
    g = make(tiny_dir, estimator="nfsd")
    encode = g.guidance.encode_prompts
    monkeypatch.setattr(g.guidance, "encode_prompts", lambda prompts: encode(prompts).half().float())
    with pytest.warns(UserWarning, match="negative prompt is empty"):
        step(g, 1)


def test_update_step_follows_schedules_and_clips(tiny_dir):
    g = make(tiny_dir, max_step_percent=[0, 0.98, 0.5, 100], grad_clip=[0, 1e-6, 1e-6, 10], estimator="sds", parity=False)
    g.update_step(0, 50)
    assert (g.min_step, g.max_step, g.grad_clip_val) == (20, 740, 1e-6)
    latents, _, _, out = step(g, 1)
    assert float(latents.grad.abs().max()) <= 1e-6 + 1e-12
    g.set_min_max_steps(0.1, 0.2)
    assert (g.min_step, g.max_step) == (100, 200)
    s = make(tiny_dir, sqrt_anneal=True, trainer_max_steps=100, max_step_percent=0.98)
    s.update_step(0, 25)  # progress 0.5: halfway from 0.98 to 0.02
    assert s.min_step == s.max_step == int(1000 * (0.96 * 0.5 + 0.02))


def test_decode_and_encode(tiny_dir):
    g = make(tiny_dir)
    img = g.decode_latents(torch.randn(2, 4, 8, 8))
    assert img.shape == (2, 3, 64, 64) and 0 <= float(img.min()) <= float(img.max()) <= 1
    assert g.decode_latents(torch.randn(1, 4, 3, 3), 16, 16).shape == (1, 3, 128, 128)
    assert g.encode_images(torch.rand(2, 3, 32, 32)).shape == (2, 4, 8, 8)


def test_controlnet_condition_from_cond_rgb(tiny_dir):
    kw = {"controlnet_name_or_path": str(tiny_dir / "controlnet"), "seed": 3}
    plain, conditioned = make(tiny_dir, **kw), make(tiny_dir, **kw)
    utils, batch = PromptOutput(plain.guidance.encode_prompts), camera_batch(2)
    rgb = torch.rand(2, 64, 64, 3)
    plain(rgb, utils, **batch)
    conditioned(rgb, utils, **batch, cond_rgb=torch.rand(1, 64, 64, 3))  # one condition, repeated to B
    a, b = plain.last_output, conditioned.last_output
    assert torch.equal(a.t, b.t) and torch.equal(a.noise, b.noise)  # same draws: only the condition differs
    assert float((a.eps_cond - b.eps_cond).abs().max()) > 1e-4


def test_half_precision_weights_keep_float32_losses(tiny_dir):
    g = ThreestudioGuidance({"pretrained_model_name_or_path": str(tiny_dir)})  # threestudio's default: fp16 weights
    assert g.weights_dtype == torch.float16
    rgb = torch.rand(2, 64, 64, 3, requires_grad=True)
    out = g(rgb, PromptOutput(g.guidance.encode_prompts), **camera_batch(2))
    out["loss_sds"].backward()
    assert out["loss_sds"].dtype == torch.float32 and rgb.grad.dtype == torch.float32
    assert torch.isfinite(rgb.grad).all() and float(rgb.grad.abs().sum()) > 0


@pytest.mark.parametrize(
    "cfg, exc, match",
    [
        ({"use_sjc": True}, ValueError, "use_sjc: expected false"),
        ({"use_img_loss": True}, ValueError, "use_img_loss: expected false"),
        ({"enable_sequential_cpu_offload": True}, ValueError, "enable_sequential_cpu_offload: expected false"),
        ({"weighting_strategy": "dreamtime"}, ValueError,
         r"weighting_strategy: expected one of \('sds', 'uniform', 'fantasia3d', 'ism'\), got 'dreamtime'"),
        ({"loss_key": "sds"}, ValueError, "loss_key: expected 'loss_<name>'"),
        ({"max_step_percent": [1, 2]}, ValueError, "max_step_percent: expected a number"),
        ({"max_step_percent": 1.0}, ValueError, r"max_step_percent: expected values in \[0, 1\)"),  # before loading
        ({"lambda_sds": 1}, TypeError, r"cfg: unknown field\(s\) \['lambda_sds'\]"),
    ],
)
def test_config_errors(tiny_dir, cfg, exc, match):
    with pytest.raises(exc, match=match):
        make(tiny_dir, **cfg)


def test_call_errors(tiny_dir):
    g = make(tiny_dir)
    utils = PromptOutput(g.guidance.encode_prompts)
    batch = camera_batch(1)
    rgb = torch.rand(1, 64, 64, 3)
    with pytest.raises(TypeError, match=r"ControlNet call guidance\(rgb, cond_rgb, prompt_utils\) is not supported"):
        g(rgb, torch.rand(1, 64, 64, 3), utils)
    with pytest.raises(ValueError, match="use_perp_neg: expected false"):
        g(rgb, PromptOutput(g.guidance.encode_prompts, use_perp_neg=True), **batch)
    with pytest.raises(ValueError, match="guidance_eval: expected False"):
        g(rgb, utils, **batch, guidance_eval=True)
    with pytest.raises(ValueError, match="cond_rgb: expected None"):
        g(rgb, utils, **batch, cond_rgb=rgb)
    with pytest.raises(ValueError, match=r"rgb: expected 4 channels last \(rgb_as_latents=True\)"):
        g(rgb, utils, **batch, rgb_as_latents=True)
    with pytest.raises(ValueError, match="elevation: expected 1 values"):
        g(rgb, utils, torch.zeros(2), batch["azimuth"], batch["camera_distances"])
    with pytest.raises(TypeError, match="azimuth: expected a .B. tensor, got NoneType"):
        g(rgb, utils, batch["elevation"])


def test_scheduled_value_rules():
    assert scheduled_value("x", 0.3, 0, 100) == 0.3
    assert scheduled_value("x", [0, 0.98, 0.5, 5000], 0, 2500) == pytest.approx(0.74)
    assert scheduled_value("x", [0.98, 0.5, 5000], 0, 7000) == pytest.approx(0.5)  # 3 entries: from step 0
    assert scheduled_value("x", [4999, 0.98, 0.5, 5000], 0, 4999) == pytest.approx(0.98)
    assert scheduled_value("x", [4999, 0.98, 0.5, 5000], 0, 5000) == pytest.approx(0.5)
    assert scheduled_value("x", [0, 1.0, 0.0, 10.0], 5, 10**6) == pytest.approx(0.5)  # float end_step: epochs
    rule = [0, 1.0, 0.5, 100, 0.1, 200]  # 1.0 -> 0.5 over [0, 100], then -> 0.1 over [100, 200]
    assert [scheduled_value("x", rule, 0, s) for s in (50, 150, 300)] == pytest.approx([0.75, 0.3, 0.1])


def test_install_writes_the_custom_folder(tmp_path, capsys):
    (tmp_path / "custom").mkdir()
    (tmp_path / "launch.py").write_text("")
    path = install(tmp_path)
    assert path == tmp_path / "custom" / "ssd-toolkit" / "__init__.py"
    assert install(tmp_path / "custom") == path  # the custom/ folder itself is accepted too
    assert "import ssd_toolkit.integrations.threestudio.guidance" in path.read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["install", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "threestudio_dir: expected a threestudio checkout" in err and "Traceback" not in err


FAKE_THREESTUDIO = {
    "__init__.py": """
        __modules__ = {}

        def register(name):
            def decorator(cls):
                if name in __modules__:
                    raise ValueError(f"Module {name} already exists!")
                __modules__[name] = cls
                return cls
            return decorator

        def find(name):
            return __modules__[name]
    """,
    "utils/__init__.py": "",
    "utils/base.py": """
        from dataclasses import dataclass
        import torch
        from omegaconf import OmegaConf

        class Updateable:
            def do_update_step(self, epoch, global_step, on_load_weights=False):
                self.update_step(epoch, global_step, on_load_weights=on_load_weights)

            def update_step(self, epoch, global_step, on_load_weights=False):
                pass

        class BaseObject(Updateable):
            @dataclass
            class Config:
                pass

            def __init__(self, cfg=None, *args, **kwargs):
                self.cfg = OmegaConf.structured(self.Config(**(cfg or {})))
                self.device = torch.device("cpu")
                self.configure(*args, **kwargs)

            def configure(self, *args, **kwargs):
                pass
    """,
}


def test_registers_with_threestudio_registry(tiny_dir, tmp_path, monkeypatch):
    """threestudio's registry, BaseObject (OmegaConf structured config) and update hook, reduced
    to what a guidance meets; the real package ran in a Lightning fit (docs)."""
    pytest.importorskip("omegaconf")
    for rel, text in FAKE_THREESTUDIO.items():
        (tmp_path / "threestudio" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "threestudio" / rel).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "threestudio" or m.startswith("threestudio.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delitem(sys.modules, "ssd_toolkit.integrations.threestudio.guidance", raising=False)
    threestudio = importlib.import_module("threestudio")
    module = importlib.import_module("ssd_toolkit.integrations.threestudio.guidance")
    try:
        cls = threestudio.find("ssd-toolkit-guidance")
        g = cls({"pretrained_model_name_or_path": str(tiny_dir), "half_precision_weights": False,
                 "max_step_percent": [0, 0.98, 0.5, 10], "estimator_params": {"M": 300.0}})
        assert g.guidance.estimator.M == 300.0
        g.do_update_step(0, 5)
        assert (g.min_step, g.max_step) == (20, 740)
        # a second execution (a copy loaded from custom/, a reload) reuses the registration, no "already exists"
        importlib.reload(module)
        assert threestudio.find("ssd-toolkit-guidance") is cls
    finally:
        sys.modules.pop("ssd_toolkit.integrations.threestudio.guidance", None)
