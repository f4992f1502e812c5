"""End-to-end ``ssd-toolkit avatar --tiny`` runs on CPU: outputs, exact resume, NaN guard, bad input."""

import hashlib
import importlib.util
import json
import re
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("smplx")

from ssd_toolkit import cli  # noqa: E402
from ssd_toolkit.integrations.avatar import config, run  # noqa: E402
from ssd_toolkit.integrations.guidance.controlnet import ControlNetGuidance  # noqa: E402
from ssd_toolkit.integrations.avatar.train import NonFiniteError, Trainer  # noqa: E402

SHORT = {"steps": 6, "checkpoint_every": 3, "preview_every": 0, "turntable_frames": 2, "body_init_steps": 5}


@pytest.fixture(scope="module")
def assets(avatar_assets):
    return avatar_assets


def settings(assets, out, **extra):
    return {"tiny": True, "out": str(out), **assets, **extra}


def run_tiny(cli_settings, resume=False):
    return run.run_avatar(config.resolve(cli_settings, resume=resume), resume=resume, progress=False, log=lambda m: None)


def losses(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def interrupt_at(monkeypatch, step):
    """Make training step ``step`` raise KeyboardInterrupt (as Ctrl-C would mid-step)."""
    original = Trainer.step_once

    def step_once(self):
        if self.step + 1 == step:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "step_once", step_once)


@pytest.fixture(scope="module")
def uninterrupted(assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    run_tiny(settings(assets, out, **SHORT))
    return out


@pytest.fixture
def interrupted(assets, tmp_path):
    """A run stopped by an interrupt during step 5; its last checkpoint is step 3."""
    out = tmp_path / "interrupted"
    with pytest.MonkeyPatch.context() as mp:
        interrupt_at(mp, 5)
        with pytest.raises(KeyboardInterrupt):
            run_tiny(settings(assets, out, **SHORT))
    return out


def test_tiny_run_end_to_end(tmp_path):
    """The CLI with only --tiny: assets are built, every output exists, the loss moves."""
    out = tmp_path / "run"
    assert cli.main(["avatar", "--tiny", "--out", str(out), "--no-progress"]) == 0
    steps, frames = config.TINY_DEFAULTS["steps"], config.TINY_DEFAULTS["turntable_frames"]
    saved = json.loads((out / "config.json").read_text())
    assert saved["tiny"] is True and saved["sd_model"].startswith(str(out))
    assert "SMOKE RUN" in (out / "SMOKE_RUN.txt").read_text()
    records = losses(out)
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    assert len({r["loss"] for r in records}) > 1 and all(np.isfinite(r["loss"]) for r in records)
    assert {"grad_norm", "t_mean", "mode_seeking", "mode_disengaging"} <= set(records[0])
    every = config.TINY_DEFAULTS["preview_every"]
    assert sorted(p.name for p in (out / "previews").iterdir()) == [f"step_{s:06d}.png" for s in range(every, steps + 1, every)]
    import imageio.v3 as iio

    gif = iio.imread(out / "turntable.gif", index=None)
    assert gif.shape[0] == frames and gif.shape[1] > 64 and gif.shape[2:] == (64, 3)  # 64x64 render + label strips
    assert len(list((out / "turntable").glob("*.png"))) == frames
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        assert not (out / "turntable.mp4").exists()
    else:
        assert iio.imread(out / "turntable.mp4", index=None).shape[0] == frames
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke_run"] is True and metrics["steps"] == steps and metrics["it_per_s"] > 0
    assert metrics["peak_memory"]["kind"] == "cpu_max_rss" and metrics["peak_memory"]["bytes"] > 0
    assert metrics["final_loss"] == records[-1]["loss"] and metrics["turntable"]["frames"] == frames
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == steps


def test_resume_after_interrupt_repeats_the_uninterrupted_run_bitwise(interrupted, uninterrupted, assets):
    assert torch.load(interrupted / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
    assert [r["step"] for r in losses(interrupted)] == [1, 2, 3, 4]
    result = run_tiny({"out": str(interrupted)}, resume=True)
    assert result.metrics["resumed_from_step"] == 3 and result.metrics["steps_this_session"] == 3
    assert losses(interrupted) == losses(uninterrupted)  # steps 4-6 recomputed, floats bit for bit
    a = torch.load(interrupted / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(uninterrupted / "checkpoints" / "last.pt", weights_only=True)
    for key, value in b["field"].items():
        assert torch.equal(a["field"][key], value), key
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(pa[k], pb[k]) for k in pb)


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(assets, tmp_path, monkeypatch):
    original = ControlNetGuidance.finish_step
    calls = []

    def finish_step(self, *args, **kwargs):  # the trainer's guidance step after the networks
        out = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 5:  # step 5
            out.gradients = torch.full_like(out.gradients, float("nan"))
        return out

    monkeypatch.setattr(ControlNetGuidance, "finish_step", finish_step)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteError, match=r"step 5: non-finite values .* last good checkpoint is kept: .*last.pt \(step 3\)"):
        run_tiny(settings(assets, out, **SHORT))
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 3 and all(torch.isfinite(v).all() for v in ckpt["field"].values())
    assert not (out / "metrics.json").exists()


def _cli(args, capsys):
    code = cli.main(["avatar", "--no-progress", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--body", "/nonexistent/smpl"], r"--body: expected an SMPL/SMPL-X model directory or file, got '/nonexistent/smpl' \(does not exist\)"),
        (["--model-type", "smplx"], r"--body: expected a smplx neutral model file in '.*body\d*', got none"),  # a directory: looks for SMPL-X
        (["--model-type", "smplx", "--body", "FILE"], r"--model-type: expected 'smpl' for '.*SMPL_NEUTRAL.pkl' .*got 'smplx'"),
        (["--estimator", "sdss"], r"--estimator: expected one of .*ssd.*, got 'sdss'"),
    ],
)
def test_bad_input_fails_clearly_before_writing(args, message, assets, tmp_path, capsys):
    out = tmp_path / "bad"
    base = ["--tiny", "--out", str(out), "--sd-model", assets["sd_model"], "--controlnet", assets["controlnet"]]
    args = [a.replace("FILE", f"{assets['body']}/smpl/SMPL_NEUTRAL.pkl") for a in args]
    if "--body" not in args:
        base += ["--body", assets["body"]]
    code, err = _cli(base + args, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not out.exists()  # nothing written, not even the folder


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, err = _cli(["--tiny", "--out", str(blocker / "run")], capsys)
    assert code == 2 and f"--out: expected a writable output directory, got '{blocker / 'run'}'" in err


def test_failed_commands_never_spoil_a_later_resume(interrupted, uninterrupted, capsys):
    ckpt = interrupted / "checkpoints" / "last.pt"
    before = {p.name: digest(p) for p in (ckpt, interrupted / "config.json", interrupted / "log.jsonl")}
    failures = [
        ["--resume", "--out", str(interrupted), "--estimator", "nope"],
        ["--resume", "--out", str(interrupted), "--model-type", "smplx"],
        ["--resume", "--out", str(interrupted), "--batch", "3"],
        ["--out", str(interrupted), "--tiny"],  # a fresh run into the directory is refused
    ]
    for args in failures:
        code, err = _cli(args, capsys)
        assert code == 2 and "error:" in err, (args, err)
    assert "already holds a run" in err
    after = {p.name: digest(p) for p in (ckpt, interrupted / "config.json", interrupted / "log.jsonl")}
    assert after == before
    code, _ = _cli(["--resume", "--out", str(interrupted)], capsys)
    assert code == 0 and losses(interrupted) == losses(uninterrupted)


def test_resume_without_a_checkpoint_says_so(assets, tmp_path, capsys):
    out = tmp_path / "empty"
    shutil.rmtree(out, ignore_errors=True)
    code, err = _cli(["--resume", "--out", str(out)], capsys)
    assert code == 2 and "--resume: expected a previous run's config.json" in err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiny_run_with_mixed_precision_on_cuda(assets, tmp_path):
    """fp16 autocast + GradScaler path: finite losses, checkpointed scaler, CUDA peak memory."""
    out = tmp_path / "cuda"
    result = run_tiny(settings(assets, out, device="cuda", precision="fp16", **SHORT))
    assert result.metrics["precision"] == "fp16-autocast"
    assert result.metrics["peak_memory"]["kind"] == "cuda_max_memory_allocated"
    assert all(np.isfinite(r["loss"]) for r in losses(out))
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == SHORT["steps"] and "scale" in ckpt["scaler"]
    resumed = tmp_path / "cuda_resumed"
    shutil.copytree(out, resumed)
    result = run_tiny({"out": str(resumed), "steps": SHORT["steps"] + 2}, resume=True)
    assert result.metrics["resumed_from_step"] == SHORT["steps"] and result.metrics["steps"] == SHORT["steps"] + 2


def test_resume_of_a_finished_run_with_fewer_steps_is_refused_without_writing(uninterrupted, tmp_path, capsys):
    """A finished 6-step run resumed with fewer steps: one line naming --steps and the step, exit 2."""
    out = tmp_path / "finished"
    shutil.copytree(uninterrupted, out)
    before = {p.name: digest(p) for p in (out / "config.json", out / "metrics.json", out / "log.jsonl")}
    for steps in ("2", "5"):
        code, err = _cli(["--resume", "--out", str(out), "--steps", steps], capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert f"--steps: expected at least the checkpoint's step 6 to continue the run, got {steps}" in err
    assert {p.name: digest(p) for p in (out / "config.json", out / "metrics.json", out / "log.jsonl")} == before


def test_resume_stopped_after_the_last_checkpoint_writes_finite_metrics(uninterrupted, tmp_path):
    """Killed after the final checkpoint, before metrics.json: the resume runs zero steps and
    writes the turntable and a metrics.json without NaN (it_per_s is null)."""
    out = tmp_path / "no_metrics"
    shutil.copytree(uninterrupted, out)
    (out / "metrics.json").unlink()
    result = run_tiny({"out": str(out)}, resume=True)
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    metrics = json.loads(text)
    assert metrics["steps_this_session"] == 0 and metrics["it_per_s"] is None and result.metrics["steps"] == 6
