"""Links and logs an avatar run must not trust blindly (issue 34 D, E, F, H): a missing or
short log.jsonl on --resume, a hard-linked .lock, symbolic links in the model directories
and in --out, a garbage saved config.json. Each ends in one line and exit code 2 with no
file changed, or in a correct run."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("smplx")

from tiny_avatar_run import TINY_RUN, avatar  # noqa: E402

from ssd_toolkit.integrations.avatar.outdir import OutputLock, check_output_location  # noqa: E402
from ssd_toolkit.integrations.avatar.provenance import SAMPLE, fingerprint  # noqa: E402
from ssd_toolkit.integrations.avatar.train import Trainer  # noqa: E402

BASE = TINY_RUN  # the settings of the finished run (conftest.py)



def digests(root):
    """SHA-256 of every file under ``root`` (links followed), by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}  # fmt: skip


def refused(capsys, out, *args, match):
    """``--resume --out out ARGS`` fails with one line holding ``match``, exit 2, nothing changed."""
    before = digests(out)
    code, err = avatar(capsys, "--resume", "--out", out, *args)
    assert code == 2 and len(err) == 1 and match in err[0], err
    assert err[0].startswith("ssd-toolkit avatar: error: ")
    assert digests(out) == before
    return err[0]


# ------------------------------------------------------------------ D: log.jsonl on --resume


def test_resume_without_log_is_refused(run_dir, capsys):
    (run_dir / "log.jsonl").unlink()
    message = refused(capsys, run_dir, "--steps", 6, match="log.jsonl")
    assert "to hold the records of steps 1 to 4 (the checkpoint's step), got no file" in message


@pytest.mark.parametrize("keep, got", [([1, 2], "2 records, without steps 3-4"), ([1, 3, 4], "3 records, without step 2"),
                                       ([], "no records")])  # fmt: skip
def test_resume_with_a_log_short_of_the_checkpoint_is_refused(run_dir, capsys, keep, got):
    path = run_dir / "log.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] in keep))
    message = refused(capsys, run_dir, "--steps", 6, match=str(path))
    assert f"got {got};" in message


def test_first_loss_of_a_resumed_run_is_step_1s(run_dir, capsys):
    """The complete log resumes; metrics.json's first_loss is still step 1's (independently read)."""
    step_1 = json.loads((run_dir / "log.jsonl").read_text().splitlines()[0])
    code, err = avatar(capsys, "--resume", "--out", run_dir, "--steps", 6)
    assert code == 0, err
    assert json.loads((run_dir / "metrics.json").read_text())["first_loss"] == step_1["loss"]
    (run_dir / "log.jsonl").unlink()  # and the same run without its log: refused, not a later loss
    refused(capsys, run_dir, "--steps", 8, match="got no file")


def test_the_log_is_flushed_to_disk_before_each_checkpoint(run_dir, capsys, monkeypatch):
    """A power cut cannot leave a checkpoint ahead of the log on disk (which --resume refuses)."""
    events, fsync, save = [], os.fsync, Trainer.save

    def recording_fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        fsync(fd)

    def recording_save(self, directory):
        events.append(("save", self.step))
        return save(self, directory)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(Trainer, "save", recording_save)
    code, err = avatar(capsys, "--resume", "--out", run_dir, "--steps", 8)
    assert code == 0, err
    saves = [i for i, event in enumerate(events) if event[0] == "save"]
    assert [events[i][1] for i in saves] == [6, 8]
    for previous, i in zip([-1, *saves], saves):
        assert ("fsync", "log.jsonl") in events[previous + 1:i], events


# ------------------------------------------------------------------ E: a hard-linked .lock


def test_a_hard_linked_lock_file_is_refused_and_the_users_file_untouched(run_dir, tmp_path, capsys):
    precious = tmp_path / "precious.txt"
    precious.write_text("do not truncate")
    (run_dir / ".lock").unlink(missing_ok=True)
    os.link(precious, run_dir / ".lock")
    message = refused(capsys, run_dir, "--steps", 6, match="'.lock' in")
    assert "got a hard link (one of 2 names of the same file)" in message
    assert precious.read_text() == "do not truncate"


def test_a_lock_file_that_is_not_this_apps_is_left_as_it_is(tmp_path):
    (tmp_path / ".lock").write_text("my notes\n")
    with pytest.raises(ValueError, match=r"got a file holding b'my notes\\n'\.\.\. \(not a pid\)"):
        OutputLock(tmp_path).acquire()
    assert (tmp_path / ".lock").read_text() == "my notes\n"
    (tmp_path / ".lock").write_text("12345\n")  # one of this app's: reused, our pid written
    with OutputLock(tmp_path):
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"


# ------------------------------------------------------------------ F: symbolic links


def _old_fingerprint(root):
    """An independent reference: the fingerprint as written before links were followed
    (Path.rglob order), for a directory without links: checkpoints written then still resume."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(root)}\0{size}\0".encode())
        with open(path, "rb") as handle:
            for offset in sorted({0, max(size // 2 - SAMPLE // 2, 0), max(size - SAMPLE, 0)}):
                handle.seek(offset)
                digest.update(handle.read(SAMPLE))
    return digest.hexdigest()


def test_a_symlinked_model_folder_is_fingerprinted_through_the_link(tiny_dir, tmp_path):
    real, linked = tmp_path / "real", tmp_path / "linked"
    shutil.copytree(tiny_dir, real)
    shutil.copytree(tiny_dir, linked, ignore=shutil.ignore_patterns("unet"))
    shutil.copytree(tiny_dir / "unet", tmp_path / "elsewhere" / "unet")
    (linked / "unet").symlink_to(tmp_path / "elsewhere" / "unet", target_is_directory=True)
    (linked / "loop").symlink_to(linked, target_is_directory=True)  # a cycle is walked once
    (real / "loop").mkdir()
    for root in (real, linked):  # 'a-c' sorts before 'a/b' as text, after it as path parts (the order kept)
        for name in ("a/b", "a-c", "a0/x"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(name.encode() * 7)
    assert fingerprint(linked) == fingerprint(real) == _old_fingerprint(real)
    weights = tmp_path / "elsewhere" / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100:] = bytes(255 - b for b in data[-100:])  # other weights, same size and name
    weights.write_bytes(bytes(data))
    assert fingerprint(linked) != fingerprint(real)


def test_resume_refuses_weights_swapped_behind_a_symlinked_unet(tiny_dir, tmp_path, capsys):
    models, out = tmp_path / "models", tmp_path / "run"
    shutil.copytree(tiny_dir, models, ignore=shutil.ignore_patterns("unet"))
    shutil.copytree(tiny_dir / "unet", tmp_path / "unet_store")
    (models / "unet").symlink_to(tmp_path / "unet_store", target_is_directory=True)
    args = ["--tiny", "--sd-model", models, "--controlnet", models / "controlnet", *BASE]
    assert avatar(capsys, "--out", out, *args)[0] == 0
    weights = tmp_path / "unet_store" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100:] = bytes(255 - b for b in data[-100:])
    weights.write_bytes(bytes(data))
    refused(capsys, out, "--steps", 6, match="sd_model: the files changed since the checkpoint")


@pytest.mark.parametrize("folder", ["checkpoints", "previews"])
def test_a_symlinked_output_folder_is_refused(run_dir, tmp_path, capsys, folder):
    """The run writes only inside --out: a linked checkpoints/ or previews/ is refused and its
    target left as it is (no checkpoint, preview or temporary written there)."""
    target = tmp_path / f"{folder}_elsewhere"
    if (run_dir / folder).exists():
        shutil.move(run_dir / folder, target)
    else:
        target.mkdir()
    (run_dir / folder).symlink_to(target, target_is_directory=True)
    before = digests(target)
    message = refused(capsys, run_dir, "--steps", 6, "--preview-every", 1, match=f"expected {folder} in")
    assert "to be a directory this app writes, got a symbolic link to" in message
    assert digests(target) == before and not any(p.name.endswith(".tmp") for p in target.iterdir())


def test_a_symlinked_previews_folder_is_refused_on_a_fresh_run(tmp_path, capsys):
    out, target = tmp_path / "new", tmp_path / "previews_elsewhere"
    out.mkdir()
    target.mkdir()
    (out / "previews").symlink_to(target, target_is_directory=True)
    code, err = avatar(capsys, "--tiny", "--out", out, *BASE, "--preview-every", 1)
    assert code == 2 and len(err) == 1 and "expected previews in" in err[0], err
    assert list(target.iterdir()) == []


# ------------------------------------------------------------------ H: --out and config.json


def test_out_a_dangling_symlink_is_one_line(tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "missing")
    code, err = avatar(capsys, "--tiny", "--out", link, *BASE)
    assert code == 2 and len(err) == 1, err
    assert f"--out: expected a writable output directory, got {str(link)!r}" in err[0]
    assert "is a symbolic link to" in err[0] and "which does not exist" in err[0]
    with pytest.raises(ValueError, match="which does not exist"):  # below a dangling link too
        check_output_location(link / "run")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe\x00garbage"], ids=["json", "utf8"])
def test_garbage_saved_config_on_resume_names_the_file(run_dir, capsys, garbage):
    (run_dir / "config.json").write_bytes(garbage)
    refused(capsys, run_dir, "--steps", 6, match=str(run_dir / "config.json"))
