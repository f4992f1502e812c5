"""DreamWaltz's trainer step through the drop-in with the estimators beyond SSD: ISM, and the
three-branch ones (nfsd, csd-annealed, sds-bridge), whose third text the drop-in encodes from
``guide.negative_prompt`` / ``guide.source_prompt`` since the trainer passes [uncond; cond] only.

The three-branch gradients are checked against each estimator's formula written out here on
ControlNet + UNet outputs recomputed directly from the replayed draws (t, then the noise).
"""

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from dreamwaltz_trainer import S, TEXT, DreamWaltzGuideConfig, build, pose_image, trainer_step  # noqa: E402

import ssd_toolkit  # noqa: E402
from ssd_toolkit.estimators import SDS_BRIDGE_SOURCE_MODIFIER  # noqa: E402
from ssd_toolkit.integrations.dreamwaltz.guide_config import read_guide_cfg  # noqa: E402

NEGATIVE = "blurry, low quality"


def test_ism_step_runs_its_inversion(tiny_dir):
    g = build(tiny_dir, estimator="ism", grad_norm=False)
    out = trainer_step(g, torch.randn(2, 4, S, S, requires_grad=True), train_step=1, max_step=10, B=2)
    delta = 80 + math.ceil((1 - 1 / 3) * 20)  # interval annealed: warm-up over 30% of 10 steps
    s = (out["t"] - delta).clamp(min=0)
    calls = max(1, math.ceil(int(s.max()) / 200)) + 1 + 1  # inversion, the call at s, the CFG call
    assert out["diagnostics"]["unet_calls"] == calls
    assert torch.isfinite(out["gradients"]).all()
    torch.testing.assert_close(out["gradients"], out["noise_residual"])  # sjc weighting: w = 1


def encode(g, prompt):
    ids = g.tokenizer([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return g.text_encoder(ids)[0]


def branch_outputs(g, x, seed, prompts):
    """The step's draws replayed (t, then the noise) and one ControlNet + UNet call per prompt."""
    from PIL import Image

    torch.manual_seed(seed)
    B = x.shape[0]
    t = torch.randint(g.get_timestep.min_step, g.get_timestep.max_step + 1, [B], dtype=torch.long)
    noise = torch.randn_like(x)
    abar = g.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
    image = np.asarray(pose_image().resize((S * 8, S * 8), resample=Image.Resampling.LANCZOS), dtype=np.float32)
    cond = torch.from_numpy(image / 255.0).permute(2, 0, 1)[None].expand(B, -1, -1, -1)
    eps = []
    for prompt in prompts:
        text = encode(g, prompt).expand(B, -1, -1)
        with torch.no_grad():
            down, mid = g.controlnet(x_t, t, encoder_hidden_states=text, controlnet_cond=[cond],
                                     conditioning_scale=[1.0], return_dict=False)
            eps.append(g.unet(x_t, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                              mid_block_additional_residual=mid).sample.double())
    return t, noise.double(), eps


def step(g, x, seed, train_step, max_step):
    torch.manual_seed(seed)
    return trainer_step(g, x.clone().requires_grad_(True), train_step=train_step, max_step=max_step, B=x.shape[0])


@pytest.mark.parametrize("train_step", [0, 3, 10])
def test_annealed_csd_is_its_formula_on_the_step(tiny_dir, train_step):
    g = build(tiny_dir, estimator="csd-annealed", grad_norm=False, negative_prompt=NEGATIVE)
    x = torch.randn(2, 4, S, S)
    out = step(g, x, seed=5, train_step=train_step, max_step=10)
    t, _, (c, u, neg) = branch_outputs(g, x, 5, [TEXT, "", NEGATIVE])
    assert torch.equal(out["t"], t)
    p = train_step / 10
    expected = c - p / 2 * u - (1 - p / 2) * neg
    torch.testing.assert_close(out["noise_residual"].double(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["gradients"], out["noise_residual"])  # sjc: w = 1


def test_nfsd_uses_the_negative_prompt_on_the_step(tiny_dir):
    g = build(tiny_dir, estimator="nfsd", grad_norm=False, negative_prompt=NEGATIVE, loss_type="dreamfusion")
    x = torch.randn(2, 4, S, S)
    out = step(g, x, seed=11, train_step=1, max_step=2)
    t, _, (c, u, neg) = branch_outputs(g, x, 11, [TEXT, "", NEGATIVE])
    low = (t < 200).view(-1, 1, 1, 1)
    expected = torch.where(low, u, u - neg) + 50.0 * (c - u)
    torch.testing.assert_close(out["noise_residual"].double(), expected, rtol=1e-4, atol=1e-4)
    w = (1 - g.alphas_cumprod[t]).view(-1, 1, 1, 1)
    torch.testing.assert_close(out["gradients"], w * out["noise_residual"])


# the tiny tokenizer is one token per byte: the source prompt's modifier passes 77 (a true warning there)
@pytest.mark.filterwarnings("ignore::ssd_toolkit.integrations.guidance.prompts.PromptTruncatedWarning")
@pytest.mark.parametrize("train_step", [5, 20000])  # stage 1 (SDS), stage 2 (the bridge)
def test_sds_bridge_uses_the_source_prompt_on_the_step(tiny_dir, train_step):
    g = build(tiny_dir, estimator="sds-bridge", grad_norm=False)
    x = torch.randn(2, 4, S, S)
    out = step(g, x, seed=13, train_step=train_step, max_step=30000)
    source = f"{TEXT}, {SDS_BRIDGE_SOURCE_MODIFIER}"
    t, noise, (c, u, src) = branch_outputs(g, x, 13, [TEXT, "", source])
    expected = u + 50.0 * (c - u) - noise if train_step < 20000 else c - src
    torch.testing.assert_close(out["noise_residual"].double(), expected, rtol=1e-4, atol=1e-4)


def test_third_branch_text_is_encoded_once_and_repeated_to_the_batch(tiny_dir):
    g = build(tiny_dir, estimator="sds-bridge", grad_norm=False, source_prompt="a plastic toy")
    torch.testing.assert_close(g.text_negative, encode(g, "a plastic toy"))
    assert build(tiny_dir, estimator="sds", grad_norm=False).text_negative is None
    with pytest.warns(UserWarning, match="guide.negative_prompt is empty"):
        g_nfsd = build(tiny_dir, estimator="nfsd", grad_norm=False)
    torch.testing.assert_close(g_nfsd.text_negative, encode(g, ""))


def test_sds_bridge_without_any_prompt_is_refused(tiny_dir):
    cfg = DreamWaltzGuideConfig(diffusion_name=tiny_dir, estimator="sds-bridge", grad_norm=False)
    from ssd_toolkit.integrations.dreamwaltz import ControllableScoreDistillationSampling

    with pytest.raises(ValueError, match=r"guide.source_prompt: sds-bridge needs a source prompt.*got ''"):
        ControllableScoreDistillationSampling("cpu", model_name=tiny_dir, guide_cfg=cfg, fp16=False)


def test_guide_prompt_fields_through_read_guide_cfg():
    s = read_guide_cfg(DreamWaltzGuideConfig(text=TEXT))
    assert s.negative_prompt == "" and s.source_prompt == f"{TEXT}, {SDS_BRIDGE_SOURCE_MODIFIER}"
    s = read_guide_cfg(DreamWaltzGuideConfig(text=TEXT, negative_prompt=NEGATIVE, source_prompt="a toy"))
    assert s.negative_prompt == NEGATIVE and s.source_prompt == "a toy"
    assert read_guide_cfg(None).source_prompt == "" and read_guide_cfg(None).negative_prompt == ""
    with pytest.raises(TypeError, match=r"guide.negative_prompt: expected a str, got 3"):
        read_guide_cfg(DreamWaltzGuideConfig(negative_prompt=3))
    pyrallis = pytest.importorskip("pyrallis")
    import dataclasses

    @dataclasses.dataclass
    class TrainConfig:
        guide: DreamWaltzGuideConfig = dataclasses.field(default_factory=DreamWaltzGuideConfig)

    parsed = pyrallis.parse(config_class=TrainConfig, args=["--guide.negative_prompt", "ugly", "--guide.source_prompt",
                                                            "a doll"])
    assert parsed.guide.negative_prompt == "ugly" and parsed.guide.source_prompt == "a doll"


def test_an_empty_negative_prompt_warns_for_a_negative_branch():
    from ssd_toolkit.integrations.dreamwaltz.dreamwaltz_compat import third_branch_prompt

    settings = read_guide_cfg(DreamWaltzGuideConfig(text=TEXT))
    with pytest.warns(UserWarning, match=r"nfsd: guide.negative_prompt is empty"):
        assert third_branch_prompt(settings, ssd_toolkit.get_estimator("nfsd")) == ""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert third_branch_prompt(settings, ssd_toolkit.get_estimator("sds")) is None
        named = read_guide_cfg(DreamWaltzGuideConfig(text=TEXT, negative_prompt=NEGATIVE))
        assert third_branch_prompt(named, ssd_toolkit.get_estimator("nfsd")) == NEGATIVE
