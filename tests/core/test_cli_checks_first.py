"""Every command checks its arguments before any heavy import (issue 35 item 2): a trivial
mistake is one line, exit 2, with torch, diffusers and transformers never imported, so it is
refused in about a second instead of after 10-40 s of imports. Run in a fresh interpreter (the
test process has torch loaded already). An ignored ``--guidance-scale`` warns in one line, and
``--help`` shows no RST markup."""

import argparse
import contextlib
import json
import subprocess
import sys

import pytest

from ssd_toolkit.cli import build_parser, main

HEAVY = ("torch", "diffusers", "transformers", "matplotlib", "sklearn", "cv2", "smplx")

# (argv, the command's prog, what the one-line message starts with: the flag, setting or file); run in tmp_path, which
# holds notes.txt, jobs.txt (two prompts), bad_jobs.yaml (an unknown setting) and latin1.{txt,yaml}
MISTAKES = [
    ("avatar --tiny --steps -1", "avatar", "--steps"),
    ("avatar --tiny --lr -1", "avatar", "--lr"),
    ("avatar --tiny --guidance-scale -3", "avatar", "--guidance-scale"),
    ("avatar --tiny --estimator sdss", "avatar", "--estimator"),
    ("avatar --tiny --out notes.txt", "avatar", "--out"),
    ("avatar --resume --out runs/never", "avatar", "--resume"),
    ("avatar --tiny --config missing.yaml", "avatar", "--config"),
    ("avatar-batch missing.txt --out runs/b --tiny", "avatar-batch", "JOBS"),
    ("avatar-batch jobs.txt --out runs/b --tiny --steps 0", "avatar-batch", "job '001-a-wooden-robot': steps"),
    ("avatar-batch jobs.txt --out runs/b --tiny --guidance-scale -3", "avatar-batch", "job '001-a-wooden-robot': guidance_scale"),
    ("avatar-batch bad_jobs.yaml --out runs/b --tiny", "avatar-batch", "JOBS: item 1 of 'bad_jobs.yaml': unknown setting 'stepz' (did you mean 'steps'?)"),
    ("avatar-batch jobs.txt --out notes.txt --tiny", "avatar-batch", "--out"),
    ("avatar-batch latin1.txt --out runs/b --tiny", "avatar-batch", "JOBS: expected a UTF-8 text file, got 'latin1.txt' (byte 0xe9 at offset 7 is not UTF-8)"),
    ("avatar --tiny --config latin1.yaml", "avatar", "--config: expected a UTF-8 text file, got 'latin1.yaml'"),
    ("toy digits --steps 0", "toy digits", "--steps"),
    ("toy trajectories --out notes.txt", "toy trajectories", "--out"),
    ("toy sweep --Ms 1,1", "toy sweep", "--Ms"),
    ("skeleton --synthetic smpl --out grid.jpg", "skeleton", "--out"),
    ("convert-smpl missing.pkl out.pkl", "convert-smpl", "src"),
]

# Runs each argv through main() in one fresh interpreter; after each, which heavy modules are loaded.
DRIVER = """
import contextlib, io, json, sys
from ssd_toolkit.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv.split())
        except SystemExit as exc:
            code = exc.code
    results.append({"argv": argv, "code": code, "err": err.getvalue(),
                    "heavy": sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)})
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """argv -> {"code", "err", "heavy"}, all mistakes in one subprocess."""
    cwd = tmp_path_factory.mktemp("cli")
    (cwd / "notes.txt").write_text("# not a model\n")
    (cwd / "jobs.txt").write_text("a wooden robot\na knight\n")
    (cwd / "bad_jobs.yaml").write_text("- {prompt: a knight, stepz: 3}\n")
    for name in ("latin1.txt", "latin1.yaml"):
        (cwd / name).write_bytes("- a caf\xe9 robot\n".encode("latin-1"))
    run = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([m[0] for m in MISTAKES]), json.dumps(HEAVY)],
                         capture_output=True, text=True, cwd=cwd, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return {r["argv"]: r for r in json.loads(run.stdout)}


@pytest.mark.parametrize("argv, prog, flag", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistake_is_refused_in_one_line_before_any_heavy_import(refused, argv, prog, flag):
    result = refused[argv]
    assert result["code"] == 2, result
    lines = result["err"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ssd-toolkit {prog}: error: {flag}"), result
    assert "expected" in lines[0] or "did you mean" in lines[0], result
    assert result["heavy"] == [], f"{argv}: imported {result['heavy']} before refusing it"


@pytest.mark.parametrize(
    "argv, warning",
    [
        ("avatar --tiny --guidance-scale 7.5", "--guidance-scale=7.5 is ignored: ssd has no CFG scale"),
        ("avatar --tiny --estimator csd --guidance-scale 7.5", "--guidance-scale=7.5 is ignored: csd has no CFG scale"),
        ("avatar --tiny --estimator nfsd --guidance-scale 20",
         "--guidance-scale=20 is ignored: nfsd keeps its own CFG scale 7.5"),
        ("avatar --tiny --estimator sds --guidance-scale 7.5", None),
        ("avatar --tiny --estimator sds-bridge --guidance-scale 7.5", None),
        ("avatar --tiny", None),  # the default scale: not the user's, no warning
    ],
)
def test_avatar_warns_once_when_the_scale_does_not_reach_the_estimator(argv, warning, tmp_path, monkeypatch, capsys):
    from ssd_toolkit.integrations.avatar import cli as avatar_cli, quiet

    ran = []
    monkeypatch.setattr(avatar_cli, "_run_command", lambda args, cfg: ran.append(cfg) or 0)
    monkeypatch.setattr(quiet, "quiet_third_party", lambda verbose: contextlib.nullcontext())  # imports diffusers
    assert main([*argv.split(), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ([f"ssd-toolkit avatar: warning: {warning}"] if warning else []), err
    assert len(ran) == 1  # a warning, not a refusal


def test_avatar_batch_warns_once_per_estimator_and_names_a_jobs_own_scale(tmp_path, monkeypatch, capsys):
    from ssd_toolkit.integrations.avatar import quiet
    from ssd_toolkit.integrations.avatar.batch import cli as batch_cli

    monkeypatch.setattr(batch_cli, "_run_command", lambda args, *checked: 0)
    monkeypatch.setattr(quiet, "quiet_third_party", lambda verbose: contextlib.nullcontext())
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("- a wooden robot\n- a knight\n- {name: nf, prompt: a cat, estimator: nfsd, guidance_scale: 9}\n"
                    "- {name: s, prompt: a dog, estimator: sds}\n")  # fmt: skip
    assert main(["avatar-batch", str(jobs), "--out", str(tmp_path / "b"), "--tiny", "--guidance-scale", "5"]) == 0
    assert capsys.readouterr().err.strip().splitlines() == [
        "ssd-toolkit avatar-batch: warning: --guidance-scale=5 is ignored: ssd has no CFG scale",
        "ssd-toolkit avatar-batch: warning: job 'nf': guidance_scale=9 is ignored: nfsd keeps its own CFG scale 7.5",
    ]


def _parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_help_of_every_command_has_no_rst_markup():
    parsers = list(_parsers(build_parser()))
    assert {p.prog for p in parsers} >= {"ssd-toolkit avatar", "ssd-toolkit avatar-batch", "ssd-toolkit toy digits"}
    for parser in parsers:
        text = parser.format_help()
        assert "``" not in text and ":func:" not in text and ":class:" not in text, (parser.prog, text)
