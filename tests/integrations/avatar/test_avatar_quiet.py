"""Quiet avatar output: no third-party warnings or bars unless -v, no cursor codes off a terminal."""

import io
import logging
import subprocess
import sys

import pytest

from ssd_toolkit.integrations.avatar.quiet import progress_bar, quiet_third_party

THIRD_PARTY_LINES = ("requires torchvision", "Loading weights", "Writing model shards", "kept in float32")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_third_party_warnings_and_bars_off_unless_verbose():
    pytest.importorskip("transformers")
    pytest.importorskip("diffusers")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as hf_logging

    for verbose in (False, True):
        with quiet_third_party(verbose):
            for name in ("transformers.modeling_utils", "diffusers.models.modeling_utils"):
                assert logging.getLogger(name).isEnabledFor(logging.WARNING) is verbose, (name, verbose)
            assert hf_logging.is_progress_bar_enabled() is verbose
            assert diffusers_logging.is_progress_bar_enabled() is verbose
    assert logging.getLogger("transformers").isEnabledFor(logging.WARNING)  # restored after the block


def test_progress_bar_draws_only_on_a_terminal(monkeypatch):
    for stream, drawn in ((io.StringIO(), False), (_Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        for _ in progress_bar(range(3), desc="x", file=stream):
            pass
        assert ("x: 100%" in stream.getvalue()) is drawn


def test_tiny_cli_stderr_has_no_third_party_lines_or_escape_codes(tmp_path):
    """A fresh process (transformers warns once per process) with stderr redirected to a pipe."""
    pytest.importorskip("diffusers")
    pytest.importorskip("smplx")
    out = tmp_path / "run"
    args = ["--tiny", "--out", str(out), "--steps", "2", "--checkpoint-every", "2", "--turntable-frames", "2",
            "--body-init-steps", "2", "--preview-every", "0"]
    done = subprocess.run([sys.executable, "-m", "ssd_toolkit", "avatar", *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    assert "\x1b" not in text and "\r" not in text, repr(text)
    assert not [line for line in THIRD_PARTY_LINES if line in text], text
    assert "done: 2 steps" in done.stdout
