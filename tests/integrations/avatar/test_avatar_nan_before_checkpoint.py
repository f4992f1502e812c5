"""A run stopped on non-finite values before its first checkpoint says what to remove: the
outputs it left make a fresh run into the same directory refuse (nothing can resume it), and
removing exactly the paths the message names lets that fresh run start (issue 35 item 6)."""

import re
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("smplx")

from ssd_toolkit.integrations.avatar import config, outdir, run  # noqa: E402
from ssd_toolkit.integrations.avatar.train import NonFiniteError  # noqa: E402
from ssd_toolkit.integrations.guidance.controlnet import ControlNetGuidance  # noqa: E402

SHORT = {"steps": 6, "checkpoint_every": 3, "preview_every": 1, "turntable_frames": 2, "body_init_steps": 5}


def test_nan_before_the_first_checkpoint_names_what_to_remove(avatar_assets, tmp_path, monkeypatch):
    original = ControlNetGuidance.finish_step
    calls = []

    def finish_step(self, *args, **kwargs):  # step 2 is not finite: before the checkpoint of step 3
        out = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            out.gradients = torch.full_like(out.gradients, float("nan"))
        return out

    monkeypatch.setattr(ControlNetGuidance, "finish_step", finish_step)
    out = tmp_path / "nan"
    cfg = config.resolve({"tiny": True, "out": str(out), **avatar_assets, **SHORT})
    with pytest.raises(NonFiniteError) as info:
        run.run_avatar(cfg, progress=False, log=lambda m: None)
    message = str(info.value)
    assert "\n" not in message and message.startswith("step 2: non-finite values"), message
    named = re.search(r"nothing can resume this run; remove (.*) \(or the folder\) or choose another --out", message)
    assert named, message
    with pytest.raises(ValueError, match="no checkpoints/last.pt"):  # what the message warns of
        outdir.check_no_unfinished_run(out)
    for path in named.group(1).split(", "):
        (shutil.rmtree if Path(path).is_dir() else Path.unlink)(Path(path))
    outdir.check_no_unfinished_run(out)  # a fresh run into it is no longer refused
    assert sorted(p.name for p in out.iterdir()) == [".lock", "SMOKE_RUN.txt"]  # nothing else was removed
