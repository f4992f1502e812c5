"""DreamWaltz-G's guidance with the SSD mixin, its calls replayed without its code (dwg_fakes)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types

import pytest

torch = pytest.importorskip("torch")

import dwg_fakes as F  # noqa: E402

import ssd_toolkit  # noqa: E402
from ssd_toolkit.estimators import at_step  # noqa: E402
from ssd_toolkit.gradient_options import GradientOptions  # noqa: E402
from ssd_toolkit.integrations.dreamwaltz_g import classes, config  # noqa: E402
from ssd_toolkit.integrations.dreamwaltz_g.mixin import SSDGuidanceMixin  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(loss_type="ssd", cls=F.Ours, **fields):
    return cls(cfg=F.FakeGuideConfig(sds_loss_type=loss_type, **fields), device=torch.device("cpu"))


def run(guide, B, t, seed=0, cond=None, **kwargs):
    """One trainer step: ``self.diffusion(**sd_kwargs)`` as DreamWaltz-G's trainer.py builds it."""
    torch.manual_seed(seed)
    inputs = torch.randn(B, 4, 8, 8, requires_grad=True)
    sd_kwargs = {"inputs": inputs, "text_embeds_dict": F.text_embeds_dict(), "train_step": 10,
                 "max_iteration": 100, "grad_viz": False, "scaler": None, "timestep": torch.tensor(t)}  # fmt: skip
    if isinstance(guide, F.FakeControlNetScoreDistillation):  # the trainer passes data['cond_images']
        sd_kwargs["cond_inputs"] = torch.zeros(1, 3, 64, 64) if cond is None else cond
    return guide(**sd_kwargs, **kwargs)


def branches(guide, keys, x, t, cond=None):
    """The branch predictions recomputed from the fake denoiser."""
    emb = F.text_embeds_dict()
    out = []
    for key in keys:
        bias = 0.0 if not isinstance(cond, torch.Tensor) else cond.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)
        out.append(F.denoiser(x, emb[key].expand(x.shape[0], -1, -1), t) + bias)
    return out


def weight(name, t):
    if name is None:
        return torch.ones(len(t))
    return ssd_toolkit.get_weighting(name)(torch.tensor(t), F.sd_alphas_cumprod())


# -- construction -------------------------------------------------------------------------
def test_constructor_takes_their_keywords_and_reads_ssd_M():
    guide = make("ssd", ssd_M=350)
    assert guide.init_ran and guide.ssd_M == 350.0 and guide.last_stats is None


@pytest.mark.parametrize(("field", "value", "message"), [
    ("sds_loss_type", "sdss", "guide.sds_loss_type: expected one of"),
    ("sds_weight_type", "uniform", "guide.sds_weight_type: expected one of"),
    ("ssd_M", float("nan"), "guide.ssd_M: expected a finite real number"),
])  # fmt: skip
def test_bad_fields_fail_before_their_init(field, value, message):
    cfg = F.FakeGuideConfig(**{field: value})
    with pytest.raises((ValueError, TypeError), match=message):
        F.Ours(cfg=cfg, device="cpu")


def test_config_without_ssd_M_gets_200():
    cfg = types.SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(F.FakeGuideConfig) if f.name != "ssd_M"})
    cfg.sds_loss_type = "ssd"
    assert F.Ours(cfg=cfg, device="cpu").ssd_M == 200.0


def test_grad_latent_norm_with_ssd_warns():
    with pytest.warns(UserWarning, match="guide.grad_latent_norm"):
        make("ssd", grad_latent_norm=True)


# -- ssd through their __call__ -----------------------------------------------------------
@pytest.mark.parametrize("use_negative_text", [True, False])
@pytest.mark.parametrize("weight_type", ["sjc", "dreamfusion", "latent-nerf", "ism", None])
@pytest.mark.parametrize("t", [[120], [120, 700], [200, 201, 980]])
def test_ssd_gradient_is_the_estimator_times_their_weight(use_negative_text, weight_type, t):
    guide = make("ssd", use_negative_text=use_negative_text, sds_weight_type=weight_type, ssd_M=200)
    out = run(guide, len(t), t)
    x, noise = guide.last_inputs["latents_noisy"], guide.last_inputs["noise"]
    u, c = branches(guide, ("neg" if use_negative_text else "null", "text"), x, torch.tensor(t))
    expected = ssd_toolkit.get_estimator("ssd", M=200)(c, u, noise, torch.tensor(t))
    expected = expected * weight(weight_type, t).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out["gradients"], expected, rtol=1e-6, atol=1e-6)
    assert list(guide.last_stats["mode_seeking"]) == [ti <= 200 for ti in t]
    torch.testing.assert_close(guide.last_inputs["noise_pred"], u + 50.0 * (c - u))


@pytest.mark.parametrize("B", [1, 2])
def test_network_call_stacks_branches_text_and_t(B):
    guide = make("ssd")
    t = [300, 90][:B]
    run(guide, B, t, cond=torch.rand(B, 3, 64, 64))
    (kind, x_shape, emb_shape, timestep, cond), = guide.predict_calls
    assert kind == "controlnet" and x_shape == (2 * B, 4, 8, 8) and emb_shape == (2 * B, 77, 8)
    # B = 1: their [1] timestep as is; B > 1: one per network row, [neg; text] order
    assert timestep.tolist() == (t if B == 1 else t + t)
    assert cond.shape[0] == (1 if B == 1 else 2 * B)
    assert guide.timestep.tolist() == t  # restored after the call
    assert guide.scale_calls == []  # x_t goes in as their add_noise made it (see the mixin)


def test_pil_conditions_reach_their_predict_untouched():
    guide = make("ssd")
    images = ["a PIL image stands here"]
    run(guide, 2, [100, 500], cond=images)
    assert guide.predict_calls[0][4] is images


def test_ssd_runs_both_branches_when_guidance_scale_is_at_most_1():
    guide = make("ssd", guidance_scale=1.0)
    run(guide, 1, [500])
    assert guide.predict_calls[0][1] == (2, 4, 8, 8)


def test_guidance_rescale_is_refused_for_ssd():
    guide = make("ssd")
    with pytest.raises(ValueError, match="guidance_rescale: ssd has no CFG prediction"):
        run(guide, 1, [500], guidance_rescale=0.7)


def test_grad_latent_options_in_their_order():
    flags = dict(grad_latent_clip=True, grad_latent_clip_scale=0.5, grad_latent_norm=True, grad_latent_nan_to_num=True)
    with pytest.warns(UserWarning, match="grad_latent_norm"):
        guide = make("ssd", **flags)
    plain = make("ssd")
    out = run(guide, 2, [100, 600])
    reference = run(plain, 2, [100, 600])["gradients"]
    torch.testing.assert_close(out["gradients"], GradientOptions(**flags)(reference), rtol=0, atol=0)


def test_half_predictions_keep_their_dtype_under_weighting():
    guide = make("ssd", sds_weight_type="dreamfusion")
    gradients = torch.ones(2, 4, 8, 8, dtype=torch.float16)
    guide.timestep = torch.tensor([100, 900])
    assert guide._weight_and_options(gradients).dtype == torch.float16


# -- nfsd, any batch ----------------------------------------------------------------------
def test_nfsd_at_batch_3_across_t_200():
    t = [150, 200, 800]  # their boolean-mask update fails for such a batch
    guide = make("nfsd", guidance_scale=7.5)
    out = run(guide, 3, t)
    assert guide.predict_calls[0][1] == (9, 4, 8, 8)
    x, noise = guide.last_inputs["latents_noisy"], guide.last_inputs["noise"]
    u, c, neg = branches(guide, ("null", "text", "neg"), x, torch.tensor(t))
    expected = ssd_toolkit.get_estimator("nfsd", guidance_scale=7.5)(c, u, noise, torch.tensor(t), eps_negative=neg)
    torch.testing.assert_close(out["gradients"], expected, rtol=0, atol=0)
    delta = torch.where(torch.tensor(t).reshape(-1, 1, 1, 1) >= 200, u - neg, u)  # their rule, t >= 200
    torch.testing.assert_close(out["gradients"], delta + 7.5 * (c - u))
    assert guide.last_inputs["noise_pred"].shape == (9, 4, 8, 8)  # their raw stacked prediction


# -- ism ----------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [[300], [60, 900]])
def test_ism_inverts_with_the_plain_unet_on_null_text(t):
    guide = make("ism", guidance_scale=7.5, sds_weight_type="ism")
    out = run(guide, len(t), t, seed=3, cond=torch.rand(len(t), 3, 64, 64))
    plain = [call for call in guide.predict_calls if call[0] == "plain"]
    assert len(plain) == guide.last_unet_calls and guide.predict_calls[-1][0] == "controlnet"
    assert all(call[2] == (len(t), 77, 8) for call in plain)
    # replay: the same noise, the same denoiser on the null text, per-sample timesteps
    torch.manual_seed(3)
    latents = torch.randn(len(t), 4, 8, 8)
    noise = torch.randn_like(latents)
    null = F.text_embeds_dict()["null"].expand(len(t), -1, -1)
    est = at_step(ssd_toolkit.get_estimator("ism", guidance_scale=7.5), 10, 100)
    x_t, target, calls = est.noisy_input(lambda x, ts: F.denoiser(x, null, ts), latents, noise, torch.tensor(t),
                                         F.sd_alphas_cumprod())  # fmt: skip
    assert calls == guide.last_unet_calls
    torch.testing.assert_close(guide.last_inputs["latents_noisy"], x_t, rtol=0, atol=0)
    torch.testing.assert_close(guide.last_inputs["noise"], target, rtol=0, atol=0)
    cond = guide.predict_calls[-1][4]
    u, c = branches(guide, ("neg", "text"), x_t, torch.tensor(t), cond=cond[: len(t)])
    expected = (u + 7.5 * (c - u) - target) * weight("ism", t).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out["gradients"], expected, rtol=1e-6, atol=1e-6)


def test_ism_without_a_plain_predict_says_so():
    guide = make("ism")
    guide._plain_predict = None
    with pytest.raises(TypeError, match="no plain-UNet _predict"):
        run(guide, 1, [300])


# -- their loss types ---------------------------------------------------------------------
@pytest.mark.parametrize("loss_type", ["sds", "sjc", "sjc-red", "custom", "csd"])
def test_their_loss_types_run_their_calc_gradients(loss_type):
    guide = make(loss_type)
    out = run(guide, 1, [400], cond=["image"], guidance_rescale=0.3)
    assert bool((out["gradients"] == 7.0).all()) and guide.predict_calls == []
    assert guide.super_calls == [dict(guidance_rescale=0.3, train_step=10, max_iteration=100, cond_inputs=["image"])]


def test_plain_class_has_no_condition():
    guide = make("ssd", cls=F.OursPlain)
    run(guide, 2, [100, 700])
    assert guide.predict_calls[0][0] == "plain" and guide.predict_calls[0][1] == (4, 4, 8, 8)


def test_embeddings_with_one_row_per_sample_are_used_as_given():
    guide = make("ssd", cls=F.OursPlain)
    emb = F.text_embeds_dict(rows=2)
    torch.manual_seed(0)
    guide(inputs=torch.randn(2, 4, 8, 8), text_embeds_dict=emb, train_step=1, max_iteration=2,
          timestep=torch.tensor([10, 500]))  # fmt: skip
    assert guide.predict_calls[0][2] == (4, 77, 8)
    emb["text"] = F.embed(5, rows=3)
    with pytest.raises(ValueError, match="expected embeddings with 1 or 2 rows"):
        guide(inputs=torch.randn(2, 4, 8, 8), text_embeds_dict=emb, train_step=1, max_iteration=2,
              timestep=torch.tensor([10, 500]))  # fmt: skip


# -- config fields and class building -----------------------------------------------------
def test_register_guide_fields_adds_ssd_M_and_keeps_post_init():
    @dataclasses.dataclass
    class GuideConfig:
        controlnet_condition: str = "pose"
        sds_loss_type: str = "sds"

        def __post_init__(self):
            self.controlnet_condition = self.controlnet_condition.split(",")

    assert config.register_guide_fields(GuideConfig) is GuideConfig
    assert config.register_guide_fields(GuideConfig) is GuideConfig  # twice is harmless
    cfg = GuideConfig(sds_loss_type="ssd", ssd_M=500.0)
    assert cfg.ssd_M == 500.0 and cfg.controlnet_condition == ["pose"] and GuideConfig().ssd_M == 200.0
    assert [f.name for f in dataclasses.fields(GuideConfig)] == ["controlnet_condition", "sds_loss_type", "ssd_M"]


def test_register_guide_fields_reads_their_loaded_configs_module(monkeypatch):
    GuideConfig = dataclasses.make_dataclass("GuideConfig", [("text", str, "")])
    monkeypatch.setitem(sys.modules, "configs", types.SimpleNamespace(GuideConfig=GuideConfig))
    assert config.register_guide_fields() is GuideConfig and GuideConfig().ssd_M == 200.0
    monkeypatch.delitem(sys.modules, "configs")
    assert config.register_guide_fields() is None


def _their_modules(monkeypatch):
    sd = types.ModuleType("core.guidance.stable_diffusion")
    cn = types.ModuleType("core.guidance.controlnet")
    sd.ScoreDistillation, sd.ScoreDistillationXL = F.FakeScoreDistillation, type("XL", (F.FakeScoreDistillation,), {})
    cn.ControlNetScoreDistillation = F.FakeControlNetScoreDistillation
    cn.ControlNetScoreDistillationXL = type("CNXL", (F.FakeControlNetScoreDistillation,), {})
    for name, module in (("core", types.ModuleType("core")), ("core.guidance", types.ModuleType("core.guidance")),
                         (sd.__name__, sd), (cn.__name__, cn)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    classes.build.cache_clear()
    return sd, cn


def test_build_subclasses_theirs_with_the_mixin_first(monkeypatch):
    sd, cn = _their_modules(monkeypatch)
    import ssd_toolkit.integrations.dreamwaltz_g as package  # noqa: PLC0415

    for name, (module_name, their_name, plain_name) in classes.THEIR_CLASSES.items():
        ours = getattr(package, name)
        theirs = getattr(sys.modules[module_name], their_name)
        assert issubclass(ours, theirs) and ours.__mro__[1] is SSDGuidanceMixin
        assert ours._plain_predict is getattr(sd, plain_name)._predict and ours.__name__ == name
    guide = package.ControlNetScoreDistillation(cfg=F.FakeGuideConfig(sds_loss_type="ssd"), device="cpu")
    out = run(guide, 2, [50, 650], cond=torch.rand(1, 3, 64, 64))
    assert out["gradients"].shape == (2, 4, 8, 8)
    classes.build.cache_clear()


def test_build_without_dreamwaltz_g_names_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "core", None)
    classes.build.cache_clear()
    with pytest.raises(ImportError, match="run from DreamWaltz-G's repository root"):
        classes.build("ControlNetScoreDistillation")
    classes.build.cache_clear()


def test_package_import_is_light():
    code = "import sys, ssd_toolkit.integrations.dreamwaltz_g as p; print('torch' in sys.modules, p.__all__[0])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "ControlNetScoreDistillation"]
