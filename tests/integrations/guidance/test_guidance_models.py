"""The tiny SD + ControlNet set and the from_pretrained loader (offline)."""

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from ssd_toolkit import stable_diffusion_schedule  # noqa: E402
from ssd_toolkit.integrations.guidance.models import (  # noqa: E402
    load_controlnet,
    load_models,
    load_sampling_scheduler,
)
from ssd_toolkit.integrations.guidance.tiny import build_tiny_pipeline  # noqa: E402


def test_layout_and_loaded_classes(tiny_dir):
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "controlnet"):
        assert (tiny_dir / sub).is_dir(), sub
    m = load_models(tiny_dir, tiny_dir / "controlnet")
    assert isinstance(m.unet, diffusers.UNet2DConditionModel)
    assert isinstance(m.controlnet, diffusers.ControlNetModel)
    assert isinstance(m.vae, diffusers.AutoencoderKL)
    assert isinstance(m.text_encoder, transformers.CLIPTextModel)
    assert isinstance(m.tokenizer, transformers.CLIPTokenizer)
    assert isinstance(m.scheduler, diffusers.DDPMScheduler)
    for net in (m.unet, m.controlnet, m.vae, m.text_encoder):
        assert not net.training
        assert all(not p.requires_grad for p in net.parameters())
        assert next(net.parameters()).dtype == torch.float32
    np.testing.assert_allclose(
        m.scheduler.alphas_cumprod.numpy(), stable_diffusion_schedule().alphas_cumprod, rtol=1e-5
    )
    assert m.vae.config.scaling_factor == pytest.approx(0.18215)


def test_tiny_dir_is_a_diffusers_pipeline_and_its_parts_load_alone(tiny_dir):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(tiny_dir), safety_checker=None)
    assert isinstance(pipe.unet, diffusers.UNet2DConditionModel)
    scheduler = load_sampling_scheduler(tiny_dir)
    assert type(scheduler) is type(pipe.scheduler)  # the class the checkpoint names
    assert scheduler.config.steps_offset == 1 and scheduler.config.clip_sample is False  # SD 1.5's settings
    net = load_controlnet(tiny_dir / "controlnet", dtype="float16")
    assert isinstance(net, diffusers.ControlNetModel) and not net.training
    assert next(net.parameters()).dtype == torch.float16
    assert all(not p.requires_grad for p in net.parameters())


def test_tokenizer_is_offline_and_pads_to_77(tiny_dir):
    m = load_models(tiny_dir, None)
    assert m.controlnet is None
    ids = m.tokenizer(["front view of a man", ""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids.shape == (2, 77)
    assert not torch.equal(ids[0], ids[1])
    assert m.text_encoder(ids)[0].shape == (2, 77, 32)


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    start = time.perf_counter()
    a = build_tiny_pipeline(tmp_path / "a", seed=3)
    assert time.perf_counter() - start < 20.0  # ~0.3 s idle; generous for a shared 2-core box
    b = build_tiny_pipeline(tmp_path / "b", seed=3)
    c = build_tiny_pipeline(tmp_path / "c", seed=4)
    wa, wb, wc = (diffusers.UNet2DConditionModel.from_pretrained(p / "unet").conv_in.weight for p in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_latent_is_an_8x_downscale(tiny_dir):
    m = load_models(tiny_dir, None)
    z = m.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert z.shape == (1, 4, 8, 8)
    assert m.unet.config.sample_size == 8


def test_fp16_weights(tiny_dir):
    m = load_models(tiny_dir, tiny_dir / "controlnet", dtype=torch.float16)
    for net in (m.unet, m.controlnet, m.vae, m.text_encoder):
        assert next(net.parameters()).dtype == torch.float16
    m = load_models(tiny_dir, None, dtype="fp16")
    assert m.dtype == torch.float16


def test_offline_hub_id_error_names_source_and_local_dir(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = "ssd-toolkit-tests/no-such-model"
    start = time.perf_counter()
    with pytest.raises(OSError) as info:
        load_models(missing, None)
    message = str(info.value)
    assert time.perf_counter() - start < 20.0  # no network wait
    assert missing in message
    assert "subfolder 'text_encoder'" in message
    assert "local directory" in message.splitlines()[0]  # one line: the CLI prints the first line only
    assert len(message.splitlines()) == 1


def test_empty_tokenizer_folder_is_an_error(tiny_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    shutil.rmtree(broken / "tokenizer")
    (broken / "tokenizer").mkdir()
    with pytest.raises(OSError, match=r"sd_model: the tokenizer in .* has \d+ tokens, expected at least 258"):
        load_models(broken, None)


def test_missing_controlnet_dir_error(tiny_dir):
    with pytest.raises(OSError, match=r"controlnet: could not load ControlNetModel from '.*nowhere'"):
        load_models(tiny_dir, tiny_dir / "nowhere")


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype: expected one of"):
        load_models("unused", None, dtype="float8")
    with pytest.raises(ValueError, match="dtype: expected torch.float32"):
        load_models("unused", None, dtype=torch.int8)
