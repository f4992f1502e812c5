"""scripts/install.sh returns at once when .venv matches its stamp and reinstalls when an input
changes (run on a copy of the inputs with a stand-in .venv; nothing is installed). It compiles
the CUDA kernel only where the CUDA driver sees a GPU, for that GPU's architectures, unless
told otherwise (asked of a stand-in libcuda.so.1 built here, found first on LD_LIBRARY_PATH)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INPUTS = ["scripts/install.sh", "pyproject.toml", "setup.py", ".ci/constraints.txt", "csrc"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None,
                                reason="needs bash and sha256sum")  # fmt: skip


def install_function(repo, name, env=None):
    """The output of install.sh's shell function ``name`` (its functions only are run)."""
    script = f'PY=python3; eval "$(sed -n "/^[a-z_]*() {{/,/^}}/p" scripts/install.sh)"; {name}'
    return subprocess.run(["bash", "-c", script], cwd=repo, capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})}).stdout.strip()  # fmt: skip


def input_hash(repo, env=None):
    return install_function(repo, "install_inputs_hash", env)


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


# A stand-in CUDA driver: FAKE_CUDA_GPUS="80,90" lists the GPUs' compute capabilities (empty: none),
# FAKE_CUDA_INIT a cuInit error code.
FAKE_DRIVER = r"""
#include <stdlib.h>
#include <string.h>
static int gpus(int *cc) {
    const char *s = getenv("FAKE_CUDA_GPUS"); int n = 0;
    while (s && *s && n < 8) { cc[n++] = atoi(s); s = strchr(s, ','); if (s) s++; }
    return n;
}
int cuInit(unsigned flags) { (void)flags; return getenv("FAKE_CUDA_INIT") ? atoi(getenv("FAKE_CUDA_INIT")) : 0; }
int cuDeviceGetCount(int *n) { int cc[8]; *n = gpus(cc); return 0; }
int cuDeviceGet(int *dev, int i) { *dev = i; return 0; }
int cuDeviceGetAttribute(int *v, int attr, int dev) {
    int cc[8]; gpus(cc);
    if (attr == 75) *v = cc[dev] / 10; else if (attr == 76) *v = cc[dev] % 10; else return 1;
    return 0;
}
"""


@pytest.fixture(scope="module")
def fake_driver(tmp_path_factory):
    """``env(gpus, **more)``: the environment under which install.sh finds the stand-in driver."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the stand-in libcuda.so.1")
    lib = tmp_path_factory.mktemp("driver")
    (lib / "fake_cuda.c").write_text(FAKE_DRIVER)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib / "libcuda.so.1"), str(lib / "fake_cuda.c")], check=True)
    path = f"{lib}:{os.environ['LD_LIBRARY_PATH']}" if os.environ.get("LD_LIBRARY_PATH") else str(lib)

    def env(gpus, **more):
        return {"LD_LIBRARY_PATH": path, "FAKE_CUDA_GPUS": gpus, "SSD_TOOLKIT_CUDA": "", "SSD_TOOLKIT_CUDA_ARCHS": "",
                **more}  # fmt: skip

    return env


def test_cuda_is_compiled_for_the_gpus_the_driver_sees(repo, fake_driver):
    plan = lambda gpus, **more: install_function(repo, "cuda_plan", fake_driver(gpus, **more))  # noqa: E731
    assert plan("90") == "build 90"
    assert plan("90,80,90") == "build 80;90"
    assert plan("86", SSD_TOOLKIT_CUDA_ARCHS="80;90") == "build 80;90"  # told otherwise
    assert plan("") == "skip no GPU visible to the CUDA driver"
    assert plan("90", FAKE_CUDA_INIT="100") == "skip no GPU visible to the CUDA driver"  # CUDA_ERROR_NO_DEVICE
    assert plan("", SSD_TOOLKIT_CUDA="1") == "build default"  # forced (CI): csrc/build_config.json's list
    assert plan("", SSD_TOOLKIT_CUDA="1", SSD_TOOLKIT_CUDA_ARCHS="90") == "build 90"
    assert plan("86", SSD_TOOLKIT_CUDA="1") == "build 86"
    assert plan("90", SSD_TOOLKIT_CUDA="0") == "skip SSD_TOOLKIT_CUDA=0"


def test_no_cuda_driver_skips_the_cuda_build(repo):
    env = {"SSD_TOOLKIT_CUDA": "", "LD_LIBRARY_PATH": ""}
    probe = subprocess.run(["python3", "-c", "import ctypes; ctypes.CDLL('libcuda.so.1')"], capture_output=True, env={**os.environ, **env})
    if probe.returncode == 0:
        pytest.skip("a CUDA driver is installed here")
    assert install_function(repo, "cuda_plan", env) == "skip no CUDA driver here (libcuda.so.1 not found)"


def test_the_stamp_follows_the_cuda_decision(repo, fake_driver):
    hashes = [input_hash(repo, fake_driver(gpus, **more)) for gpus, more in
              [("90", {}), ("80", {}), ("", {}), ("", {"SSD_TOOLKIT_CUDA": "1"}), ("90", {"SSD_TOOLKIT_CUDA_ARCHS": "80;90"})]]
    assert len(set(hashes)) == len(hashes)
    assert input_hash(repo, fake_driver("90,90")) == hashes[0]  # the same decision: no reinstall


def test_install_says_in_one_line_that_it_skips_the_cuda_kernel(repo, fake_driver):
    env = {**os.environ, **fake_driver(""), "SSD_TOOLKIT_FORCE_INSTALL": "1"}
    done = subprocess.run(["bash", "scripts/install.sh"], cwd=repo, capture_output=True, text=True, timeout=60, env=env)
    skip = [line for line in done.stdout.splitlines() if "CUDA" in line]  # then fails at the stand-in .venv
    assert skip == ["install.sh: no GPU visible to the CUDA driver: not compiling the CUDA kernel "
                    "(SSD_TOOLKIT_CUDA=1 compiles it anyway)"], done.stdout  # fmt: skip
