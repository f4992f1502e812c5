"""scripts/install.sh returns at once when .venv matches its stamp and reinstalls when an input
changes (run on a copy of the inputs with a stand-in .venv; nothing is installed)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INPUTS = ["scripts/install.sh", "pyproject.toml", "setup.py", ".ci/constraints.txt", "csrc"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None,
                                reason="needs bash and sha256sum")  # fmt: skip


def input_hash(repo):
    script = 'PY=python3; eval "$(sed -n "/^install_inputs_hash()/,/^}/p" scripts/install.sh)"; install_inputs_hash'
    return subprocess.run(["bash", "-c", script], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    for name in INPUTS:
        src, dst = ROOT / name, tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("build", "__pycache__", "*.o", "*.so"))
        else:
            shutil.copy(src, dst)
    python = tmp_path / ".venv" / "bin" / "python"  # a stand-in that imports anything; no activate script
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o755)
    (tmp_path / ".venv" / ".ssd_toolkit_install_stamp").write_text(f"{input_hash(tmp_path)} yes\n")
    return tmp_path


def run_install(repo):
    return subprocess.run(["bash", "scripts/install.sh"], cwd=repo, capture_output=True, text=True, timeout=60)


def test_current_venv_returns_at_once(repo):
    done = run_install(repo)
    assert done.returncode == 0 and ".venv is current" in done.stdout, done.stderr


@pytest.mark.parametrize("change", ["csrc/ssd_cpu.cpp", "pyproject.toml", ".ci/constraints.txt"])
def test_changed_input_reinstalls(repo, change):
    with open(repo / change, "a") as f:
        f.write("\n# changed\n")
    done = run_install(repo)  # goes on to install: fails here at the stand-in .venv's missing activate
    assert ".venv is current" not in done.stdout and done.returncode != 0
    assert not (repo / ".venv" / ".ssd_toolkit_install_stamp").exists()  # removed until an install succeeds


def test_docs_changes_do_not_reinstall(repo):
    notes = repo / "csrc" / "NOTES_TEST.md"
    notes.write_text("prose\n")
    assert run_install(repo).returncode == 0
