"""``ssd-toolkit avatar`` with ISM, SDS-Bridge and the gradient options: the settings reach the
guidance, and a tiny ISM run trains end to end."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("smplx")

from ssd_toolkit import cli  # noqa: E402
from ssd_toolkit.estimators import SDS_BRIDGE_SOURCE_MODIFIER  # noqa: E402
from ssd_toolkit.integrations.avatar import config, run  # noqa: E402


def guidance_for(models, **settings):
    cfg = config.AvatarConfig(prompt="a robot", tiny=True, **settings)
    config.validate(cfg)
    return run.load_guidance_for(cfg, models.device, amp=False, models=models)


def test_settings_reach_the_guidance(models):
    ism = guidance_for(models, estimator="ism", weighting="ism", guidance_scale=12.0, guidance_adjust="linear_reverse",
                       grad_latent_clip=True, grad_latent_clip_scale=2.0)
    assert ism.estimator.name == "ism" and ism.estimator.guidance_scale == 12.0
    assert ism.gradient_options.grad_latent_clip and ism.gradient_options.grad_latent_clip_scale == 2.0
    assert ism.estimator_at(1, 10).guidance_scale == 7.5  # linear_reverse starts at 7.5
    bridge = guidance_for(models, estimator="sds-bridge")
    assert bridge.source_prompt == "a robot, " + SDS_BRIDGE_SOURCE_MODIFIER
    assert guidance_for(models, estimator="sds-bridge", source_prompt="a robot, blurry").source_prompt == "a robot, blurry"
    assert guidance_for(models, estimator="nfsd").source_prompt is None  # NFSD keeps its negative prompt


def test_bad_guidance_adjust_is_named():
    with pytest.raises(ValueError, match=r"guidance_adjust: expected one of constant, .*linear_reverse, got 'cosine'"):
        config.validate(config.AvatarConfig(prompt="a robot", tiny=True, guidance_adjust="cosine"))


def test_tiny_ism_run(tmp_path):
    out = tmp_path / "ism"
    argv = ["avatar", "--tiny", "--out", str(out), "--no-progress", "--estimator", "ism", "--weighting", "ism",
            "--steps", "2", "--turntable-frames", "2", "--preview-every", "0", "--body-init-steps", "5",
            "--grad-latent-nan-to-num"]
    assert cli.main(argv) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)
    assert json.loads((out / "config.json").read_text())["estimator"] == "ism"
