"""Faults an avatar run must survive: torn logs, corrupt or foreign checkpoints, two runs in
one folder, stale temporaries, full disks, missing pieces. Each ends in one line and exit
code 2 with nothing overwritten, or in a correct resume."""

import errno
import hashlib
import json
import os
import shutil
import signal

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("smplx")

from tiny_avatar_run import TINY_RUN, avatar  # noqa: E402

from ssd_toolkit import cli  # noqa: E402
from ssd_toolkit.integrations.avatar import checkpoint, run  # noqa: E402
from ssd_toolkit.integrations.avatar.body import openpose  # noqa: E402
from ssd_toolkit.integrations.guidance import tiny  # noqa: E402
from ssd_toolkit.integrations.avatar.outdir import OutputLock  # noqa: E402
from ssd_toolkit.integrations.avatar.train import Trainer  # noqa: E402

BASE = TINY_RUN  # the settings of the finished run (conftest.py)



def digests(out, names=("config.json", "log.jsonl", "checkpoints/last.pt", "metrics.json")):
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in names}


def records(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def refused(capsys, out, *args, match):
    """The command fails with one line naming ``match``, exit 2, and changes no file of ``out``."""
    before = digests(out)
    code, err = avatar(capsys, "--resume", "--out", out, *args)
    assert code == 2 and len(err) == 1 and match in err[0], err
    assert err[0].startswith("ssd-toolkit avatar: error: ")
    assert digests(out) == before
    return err[0]


# ------------------------------------------------------------------ log.jsonl


def test_torn_last_log_line_is_dropped_and_the_run_resumes(run_dir, capsys):
    with open(run_dir / "log.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.12')  # a full disk tore the record of step 5
    code, err = avatar(capsys, "--resume", "--out", run_dir, "--steps", 6)
    assert code == 0, err
    assert [r["step"] for r in records(run_dir)] == [1, 2, 3, 4, 5, 6]


def test_unparsable_middle_log_line_names_the_file(run_dir, capsys):
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    lines[1] = "garbage"
    (run_dir / "log.jsonl").write_text("\n".join(lines) + "\n")
    message = refused(capsys, run_dir, "--steps", 6, match="log.jsonl")
    assert "line 2" in message


# ------------------------------------------------------------------ corrupt checkpoints


def _truncate(data):
    return data[: len(data) // 2]


def _random(data):
    return os.urandom(len(data))


def _flip(data):
    at = len(data) // 3
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]


@pytest.mark.parametrize("damage", [_truncate, _random, lambda d: b"", _flip], ids=["truncated", "random", "empty", "flipped-byte"])
def test_corrupt_checkpoint_is_refused_with_one_line(run_dir, capsys, damage):
    path = run_dir / "checkpoints" / "last.pt"
    path.write_bytes(damage(path.read_bytes()))
    refused(capsys, run_dir, match="last.pt")


def test_checkpoint_missing_keys_is_refused(run_dir, capsys):
    path = run_dir / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    del state["optimizer"]
    checkpoint.save_checkpoint(path, state)  # a valid checksum over a state that lacks a key
    refused(capsys, run_dir, match="missing ['optimizer']")


def test_every_flipped_byte_is_detected(finished, tmp_path):
    """The checksum catches a flipped byte anywhere (before it, 152 of 201 positions loaded)."""
    data = (finished / "checkpoints" / "last.pt").read_bytes()
    path = tmp_path / "last.pt"
    for at in range(0, len(data), max(1, len(data) // 200)):
        path.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:])
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.load_checkpoint(path, required=checkpoint.TRAINER_KEYS)


def test_checkpoint_of_another_run_with_the_same_shapes_is_refused(run_dir, tmp_path, capsys):
    other = tmp_path / "other"
    code, err = avatar(capsys, "--tiny", "--out", other, "--lr", 0.02, *BASE)
    assert code == 0, err
    shutil.copy(other / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.pt")
    message = refused(capsys, run_dir, "--steps", 6, match="other settings")
    assert "lr: checkpoint 0.02, config 0.01" in message and "Adam lr: checkpoint [0.02]" in message


def test_checkpoint_with_an_edited_adam_lr_is_refused(run_dir, capsys):
    path = run_dir / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    for group in state["optimizer"]["param_groups"]:
        group["lr"] = 0.5
    checkpoint.save_checkpoint(path, state)
    refused(capsys, run_dir, match="Adam lr: checkpoint [0.5], config 0.01")


# ------------------------------------------------------------------ the output directory


def test_second_run_into_a_locked_directory_is_refused(run_dir, capsys):
    with OutputLock(run_dir):
        message = refused(capsys, run_dir, "--steps", 6, match="no other run is using")
    assert f"locked by process {os.getpid()}" in message
    code, err = avatar(capsys, "--resume", "--out", run_dir, "--steps", 6)  # the lock is gone with its holder
    assert code == 0, err


def test_fresh_run_into_a_locked_new_directory_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "new"
    out.mkdir()
    with OutputLock(out):
        code, err = avatar(capsys, "--tiny", "--out", out, *BASE)
    assert code == 2 and len(err) == 1 and "locked by process" in err[0]
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # no assets, config or log


def test_stale_temporaries_of_a_killed_run_are_removed(run_dir, capsys):
    stale = [run_dir / "checkpoints" / ".last.pt.k1ll3d.tmp", run_dir / ".config.json.x.tmp",
             run_dir / ".turntable.tmp.mp4", run_dir / "turntable" / ".001.png.a1b2c3d4.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    half_built = run_dir / "tiny_assets" / ".models.abc123"
    half_built.mkdir()
    code, err = avatar(capsys, "--resume", "--out", run_dir, "--steps", 5)
    assert code == 0, err
    assert not any(p.exists() for p in stale) and not half_built.exists()


def test_temporaries_that_are_not_this_apps_stay(run_dir, capsys):
    """Only the temporaries of the app's own outputs go, by exact name and folder."""
    foreign = [run_dir / ".notes.tmp", run_dir / ".write_probe.y", run_dir / "checkpoints" / ".config.json.x.tmp",
               run_dir / "mine" / "deep" / ".last.pt.k1ll3d.tmp", run_dir / "tiny_assets" / "models" / ".body.x.tmp"]
    for path in foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"keep")
    code, err = avatar(capsys, "--resume", "--out", run_dir, "--steps", 5)
    assert code == 0, err
    assert all(p.read_bytes() == b"keep" for p in foreign)


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(run_dir, tmp_path, capsys):
    target = tmp_path / "precious.txt"
    target.write_text("do not truncate")
    (run_dir / ".lock").unlink(missing_ok=True)
    (run_dir / ".lock").symlink_to(target)
    message = refused(capsys, run_dir, "--steps", 6, match="'.lock' in")
    assert "to be a regular file this app writes, got a symbolic link" in message
    assert target.read_text() == "do not truncate"


def test_a_run_that_loses_the_lock_race_removes_nothing(tmp_path, capsys, monkeypatch):
    """Run A creates the directory, run B takes its lock first and writes; A must leave B's
    directory alone (it removes only what it created and locked)."""
    out = tmp_path / "race"
    other = OutputLock(out)
    create = run._create_directory

    def create_then_lose_the_race(path):
        created = create(path)
        other.acquire()  # run B enters between A's mkdir and A's lock
        (path / "config.json").write_text("run B's")
        return created

    monkeypatch.setattr(run, "_create_directory", create_then_lose_the_race)
    try:
        code, err = avatar(capsys, "--tiny", "--out", out, *BASE)
        assert code == 2 and len(err) == 1 and "locked by process" in err[0], err
        assert (out / "config.json").read_text() == "run B's"
    finally:
        other.release()


def test_resume_refuses_swapped_model_weights(tiny_dir, tmp_path, capsys):
    models, out = tmp_path / "models", tmp_path / "run"
    shutil.copytree(tiny_dir, models)
    args = ["--tiny", "--sd-model", models, "--controlnet", models / "controlnet", *BASE]
    assert avatar(capsys, "--out", out, *args)[0] == 0
    weights = models / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100:] = bytes(255 - b for b in data[-100:])  # other weights, same size and name
    weights.write_bytes(bytes(data))
    message = refused(capsys, out, "--steps", 6, match="sd_model: the files changed since the checkpoint")
    assert "controlnet" not in message.split("nothing was changed")[0].split("(", 1)[1]


def test_resume_with_another_thread_count_says_it_is_not_bitwise(run_dir, capsys, monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 1)
    code = cli.main(["avatar", "--no-progress", "--resume", "--out", str(run_dir), "--steps", "5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"torch threads: the checkpoint was written with {threads}, this run uses {threads + 1}" in captured.out


def test_an_output_path_of_the_wrong_kind_is_one_line(run_dir, capsys):
    (run_dir / "log.jsonl").unlink()
    (run_dir / "log.jsonl").mkdir()
    kept = ("config.json", "checkpoints/last.pt", "metrics.json")
    before = digests(run_dir, kept)
    code, err = avatar(capsys, "--resume", "--out", run_dir, "--steps", 6)
    assert code == 2 and len(err) == 1, err
    assert "out: expected log.jsonl in" in err[0] and "to be a file this app writes, got a directory" in err[0]
    assert digests(run_dir, kept) == before


def test_ctrl_c_at_start_up_is_one_line_exit_130(tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "load_guidance_for", interrupt)  # while the networks load
    code, err = avatar(capsys, "--tiny", "--out", tmp_path / "new", *BASE)
    assert code == 130 and err == ["ssd-toolkit avatar: interrupted; the last checkpoint, if any, is kept"]
    assert not (tmp_path / "new").exists()  # the fresh start's directory went with it


def test_sigterm_stops_like_ctrl_c_with_a_message_exit_143(run_dir, capsys, monkeypatch):
    step_once = Trainer.step_once

    def terminated_at_step_6(self):
        if self.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return step_once(self)

    monkeypatch.setattr(Trainer, "step_once", terminated_at_step_6)
    code = cli.main(["avatar", "--no-progress", "--resume", "--out", str(run_dir), "--steps", "8"])
    captured = capsys.readouterr()
    assert code == 143
    assert captured.err.strip().splitlines()[-1] == (
        "ssd-toolkit avatar: terminated (SIGTERM); the last checkpoint, if any, is kept")
    assert "continue with --resume" in captured.out
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is only the command's


def test_zero_step_resume_keeps_the_final_loss(run_dir, capsys):
    final = json.loads((run_dir / "metrics.json").read_text())["final_loss"]
    code, err = avatar(capsys, "--resume", "--out", run_dir)
    assert code == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps_this_session"] == 0 and metrics["final_loss"] == final == records(run_dir)[-1]["loss"]


# ------------------------------------------------------------------ settings and environment


@pytest.mark.parametrize("key", ["lr", "box_margin"])
def test_infinite_setting_in_a_config_file_is_refused(tmp_path, capsys, key):
    settings = tmp_path / "settings.json"
    settings.write_text('{"%s": Infinity}' % key)  # what json.dumps(float("inf")) writes
    out = tmp_path / "out"
    code, err = avatar(capsys, "--tiny", "--out", out, "--config", settings)
    assert code == 2 and err == [f"ssd-toolkit avatar: error: config file {str(settings)!r}: key {key}: expected a finite number, got inf"]
    assert not out.exists()


def test_missing_controlnet_aux_is_found_before_anything_is_written(tmp_path, capsys, monkeypatch):
    def missing():
        raise ImportError("controlnet_aux's OpenPose drawing module is missing: pip install --no-deps controlnet_aux==0.0.10")

    monkeypatch.setattr(openpose, "load_openpose_drawing", missing)
    out = tmp_path / "out"
    code, err = avatar(capsys, "--tiny", "--out", out, *BASE)
    assert code == 2 and len(err) == 1 and "pip install --no-deps controlnet_aux" in err[0]
    assert not out.exists()


def test_full_disk_while_building_tiny_assets_is_one_line(tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')

    monkeypatch.setattr(tiny, "build_tiny_pipeline", full)
    out = tmp_path / "out"
    code, err = avatar(capsys, "--tiny", "--out", out, *BASE)
    assert code == 2 and len(err) == 1 and "No space left" in err[0] and err[0].startswith("ssd-toolkit avatar: error: --out:")
    assert not out.exists()


def test_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(run_dir, capsys, monkeypatch):
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()

    def full(self, directory):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Trainer, "save", full)
    code, err = avatar(capsys, "--resume", "--out", run_dir, "--steps", 6)
    assert code == 2 and err == ["ssd-toolkit avatar: error: --out: expected room to write the run, got OSError: [Errno 28] No space left on device"]
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before


def test_run_avatar_api_releases_the_lock(run_dir):
    """After a run (or a failure) the directory can be locked again."""
    from ssd_toolkit.integrations.avatar import config

    with pytest.raises(checkpoint.CheckpointError):
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
        run.run_avatar(config.resolve({"out": str(run_dir)}, resume=True), resume=True, progress=False, log=lambda m: None)
    with OutputLock(run_dir):
        pass
