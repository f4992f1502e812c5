"""ssd-toolkit's top level: --version, "did you mean" for a mistyped command, Ctrl-C at start-up."""

from __future__ import annotations

import pytest

import ssd_toolkit
from ssd_toolkit import cli


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ssd-toolkit {ssd_toolkit.__version__}"


def test_a_mistyped_command_suggests_the_close_one(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["backendz"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1
    assert "got 'backendz' (did you mean 'backends'?)" in err


def test_a_far_off_command_gets_no_suggestion(capsys):
    with pytest.raises(SystemExit):
        cli.main(["zzzzzz"])
    assert "did you mean" not in capsys.readouterr().err


@pytest.mark.parametrize("where", ["build_parser", "command"])
def test_ctrl_c_before_or_during_a_command_is_one_line_and_exit_130(monkeypatch, capsys, where):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "build_parser":  # start-up: entry points still loading
        monkeypatch.setattr(cli, "command_groups", interrupt)
    else:
        monkeypatch.setattr(cli, "_backends", interrupt)
    assert cli.main(["backends"]) == 130
    err = capsys.readouterr().err
    assert err == "ssd-toolkit: interrupted (Ctrl-C)\n"
