"""Plausible user mistakes: each is one line ``ssd-toolkit <cmd>: error: <flag>: expected ..., got ...``,
exit code 2, no traceback, and nothing written."""

import os
import subprocess
import sys

import pytest

from ssd_toolkit.cli import main

TEXT = "notes.txt"  # a text file in the working folder, passed where a model or an output folder belongs

# (argv, the command's prog, the flag the message must start with)
MISTAKES = [
    ("toy trajectories --seeds 0", "toy trajectories", "--seeds"),
    ("toy trajectories --steps -5", "toy trajectories", "--steps"),
    ("toy sweep --Ms 0,100,x", "toy sweep", "--Ms"),
    ("toy trajectories --step 5", "toy trajectories", "--step"),  # abbreviations are off
    ("toy trajectories --lr nan", "toy trajectories", "--lr"),
    ("toy digits --weighting linear", "toy digits", "--weighting"),
    ("toy statistics --noises 1", "toy statistics", "--noises"),
    ("toy digits --per-class 0", "toy digits", "--per-class"),
    (f"toy trajectories --steps 2 --seeds 1 --out {TEXT}", "toy trajectories", "--out"),
    ("toy sweep --lrs 0.01,,0.1", "toy sweep", "--lrs"),
    ("toy all --seed -3", "toy all", "--seed"),
    ("toy", "toy", "EXPERIMENT"),
    ("skeleton --body /nonexistent/smpl --out grid.png", "skeleton", "--body"),
    (f"skeleton --body {TEXT} --out grid.png", "skeleton", "--body"),
    ("skeleton --synthetic smpl --out grid.jpg", "skeleton", "--out"),
    ("skeleton --synthetic smpl --out grid.png --views 0", "skeleton", "--views"),
    ("skeleton --out grid.png", "skeleton", "--body"),
    ("convert-smpl /nonexistent/SMPL_NEUTRAL.pkl out.pkl", "convert-smpl", "src"),
    (f"convert-smpl {TEXT} out.pkl", "convert-smpl", "src"),
    ("avatar", "avatar", "--prompt"),
    ("avatar --tiny --estimator sdss", "avatar", "--estimator"),
    ("avatar --tiny --steps 0", "avatar", "--steps"),
    ("avatar --tiny --config settings.yaml", "avatar", "--config"),
    ("avatar --tiny --lr inf", "avatar", "--lr"),
    ("avatar --tiny --t-sampler dreamy", "avatar", "--t-sampler"),
    ("avatar --tiny --field-resolutions 8 x", "avatar", "--field-resolutions"),
    ("avatar --resume --out runs/never", "avatar", "--resume"),
    ("backends --json", "backends", "--json"),
]


def run_cli(argv, capsys):
    """``main(argv)`` -> (exit code, stderr): parse errors exit through SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("argv, prog, flag", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistake_is_one_line_exit_2_and_writes_nothing(argv, prog, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / TEXT).write_text("# not a model\n")
    code, err = run_cli(argv.split(), capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"ssd-toolkit {prog}: error: {flag}: expected "), err
    assert ", got " in lines[0], err
    assert sorted(os.listdir(tmp_path)) == [TEXT]  # no output folder, file or asset


def test_twenty_or_more_mistakes_covering_every_command():
    assert len(MISTAKES) >= 20
    assert {m[1].split()[0] for m in MISTAKES} >= {"toy", "skeleton", "convert-smpl", "avatar", "backends"}


def test_the_console_script_prints_no_traceback(tmp_path):
    """The real process: exit 2 and one stderr line (no Python traceback)."""
    run = subprocess.run([sys.executable, "-m", "ssd_toolkit", "toy", "sweep", "--Ms", "0,100,x"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().splitlines() == ["ssd-toolkit toy sweep: error: --Ms: expected a finite number >= 0, got 'x' in the list '0,100,x'"]


@pytest.mark.parametrize(
    "argv, module, extra",
    [
        ("toy trajectories --steps 2 --seeds 1", "matplotlib", "toy"),
        ("toy digits --steps 2", "sklearn", "toy"),
        ("skeleton --synthetic smpl --out grid.png", "cv2", "avatar"),
        ("avatar --tiny", "diffusers", "avatar"),
    ],
)
def test_missing_optional_dependency_names_the_extra(argv, module, extra, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # import and find_spec both fail
    code, err = run_cli(argv.split(), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f'{module}: expected an installed optional dependency, got none (pip install "ssd_toolkit[{extra}]")' in err
    assert os.listdir(tmp_path) == []


def test_an_internal_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """Only user errors become one line: an unexpected exception propagates."""
    from ssd_toolkit.toy import trajectories

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(trajectories, "run", broken)
    with pytest.raises(ZeroDivisionError):
        main(["toy", "trajectories", "--out", str(tmp_path / "o")])


def test_avatar_help_lists_every_registered_estimator_and_the_defaults(capsys):
    import ssd_toolkit

    with pytest.raises(SystemExit):
        main(["avatar", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ssd_toolkit.list_estimators():
        assert name in text.replace("- ", "-")  # argparse may wrap at a hyphen
    assert "(default: 'ssd')" in text and "(default: 200.0)" in text and "--tiny: 12" in text


def test_stale_metadata_without_command_groups_says_how_to_fix_it(monkeypatch, capsys):
    import ssd_toolkit.cli as cli_module

    monkeypatch.setattr(cli_module, "command_groups", lambda: [])
    code, err = run_cli(["toy", "trajectories"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "COMMAND: expected one of 'backends', got 'toy'" in err and "reinstall with bash scripts/install.sh" in err


def test_every_command_group_is_registered_through_entry_points():
    from ssd_toolkit.cli import command_groups

    assert {ep.name for ep in command_groups()} >= {"toy", "skeleton", "convert-smpl", "avatar", "avatar-batch"}
