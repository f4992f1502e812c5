"""The build plumbing: one flag file, unique object names, CMake and setup.py builds."""

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[2]
CONFIG = json.loads((ROOT / "csrc" / "build_config.json").read_text())


def test_compiled_sources_have_unique_stems():
    """Objects are named by stem: two sources named alike would overwrite each other."""
    sources = sorted(p for ext in ("cpp", "cu") for p in (ROOT / "csrc").rglob(f"*.{ext}"))
    stems = [p.stem for p in sources]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    assert sources and not duplicates, f"csrc: duplicate source stems {duplicates}"


def test_config_sources_exist_and_both_builds_read_the_config():
    for src in CONFIG["cxx"]["sources"]:
        assert (ROOT / src).is_file(), src
    assert "csrc/build_config.json" in (ROOT / "CMakeLists.txt").read_text()
    assert '"csrc", "build_config.json"' in (ROOT / "setup.py").read_text()


def test_emulation_compiles_the_kernel_source_itself():
    """One kernel source: the .cu and the CPU emulation include the same device code and
    launch logic; no kernel is defined anywhere else."""
    cuda = ROOT / "csrc" / "cuda"
    for src in CONFIG["emulation"]["sources"]:
        assert (ROOT / src).is_file(), src
    emulated = (cuda / "emulation" / "emulated_module.cpp").read_text()
    real = (cuda / "ssd_cuda.cu").read_text()
    for header in ("ssd_kernels.cuh", "ssd_launch.h"):
        assert f'#include "../{header}"' in emulated and f'#include "{header}"' in real, header
    defining = sorted(p.name for p in cuda.rglob("*") if p.is_file() and "__global__ void" in p.read_text())
    assert defining == ["ssd_kernels.cuh"], defining


@pytest.fixture(scope="module")
def setup_module_namespace():
    """setup.py's functions, without running setup()."""
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: None
    try:
        return runpy.run_path(str(ROOT / "setup.py"), run_name="setup_under_test")
    finally:
        setuptools.setup = original


def test_gencode_flags_add_ptx_for_the_highest_arch(setup_module_namespace):
    flags = setup_module_namespace["gencode_flags"]("90;80,8.6")
    assert flags == [
        "-gencode=arch=compute_90,code=sm_90",
        "-gencode=arch=compute_80,code=sm_80",
        "-gencode=arch=compute_86,code=sm_86",
        "-gencode=arch=compute_90,code=compute_90",
    ]
    with pytest.raises(ValueError, match="SSD_TOOLKIT_CUDA_ARCHS: expected e.g. '80;86;90', got 'sm_90'"):
        setup_module_namespace["gencode_flags"]("sm_90")


def test_cuda_can_be_switched_off(setup_module_namespace, monkeypatch):
    monkeypatch.setenv("SSD_TOOLKIT_CUDA", "0")
    plan, reason = setup_module_namespace["cuda_plan"]()
    assert plan is None and reason == "SSD_TOOLKIT_CUDA=0"


def _copy_sources(dst):
    """A copy of what the builds need (setup.py also needs the package directories)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("setup.py", "CMakeLists.txt", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dst / name)
    shutil.copytree(ROOT / "csrc", dst / "csrc")
    for package_dir in ("ssd_toolkit", "toy", "integrations"):
        shutil.copytree(ROOT / package_dir, dst / package_dir, ignore=shutil.ignore_patterns("*.so", "__pycache__"))


def test_failed_compile_still_installs_the_python_package(tmp_path):
    """No working compiler: setup.py warns and finishes without the module."""
    _copy_sources(tmp_path)
    env = {**os.environ, "CXX": "false", "SSD_TOOLKIT_CUDA": "0"}
    env.pop("SSD_TOOLKIT_REQUIRE_BUILD", None)
    result = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "building the compiled module failed" in result.stderr
    assert not list((tmp_path / "ssd_toolkit").glob("_C*.so"))


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cmake_cpu_build_imports_and_runs(tmp_path):
    """CMake + Ninja builds the CPU module from the same config; it runs the estimator. With
    SSD_TOOLKIT_EMULATE_CUDA=1 it also builds the CUDA emulation module, which imports."""
    pybind11 = pytest.importorskip("pybind11")
    ninja = pytest.importorskip("ninja")
    _copy_sources(tmp_path / "src")
    build = tmp_path / "build"
    env = {
        **os.environ, "SSD_TOOLKIT_CUDA": "0", "SSD_TOOLKIT_EMULATE_CUDA": "1",
        "PATH": f"{ninja.BIN_DIR}{os.pathsep}{os.environ['PATH']}",
    }
    configure = [
        "cmake", "-G", "Ninja", "-S", str(tmp_path / "src"), "-B", str(build),
        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}",
    ]
    outputs = []
    for command in (configure, ["cmake", "--build", str(build), "-j", "2"]):
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        outputs.append(result.stdout)
    assert "ssd_toolkit: CPU-only build" in outputs[0]
    assert f"ssd_toolkit: CUDA emulation module {CONFIG['emulation']['module']}" in outputs[0]
    module = next(build.glob("_C*.so"))
    script = (
        "import importlib.util, numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('ssd_toolkit._C', {str(module)!r})\n"
        "C = importlib.util.module_from_spec(spec); spec.loader.exec_module(C)\n"
        "c = np.array([[3.0, 4.0]]); u = np.zeros_like(c); n = np.array([[1.0, 0.0]])\n"
        "out = np.empty_like(c); t = np.zeros(1)\n"
        "C.estimate_cpu(c.ctypes.data, u.ctypes.data, n.ctypes.data, out.ctypes.data, t.ctypes.data, 0,\n"
        "               1, 2, 'float64', 5.0)\n"
        "print(C.compiled_with_cuda(), out.tolist())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # h = (3, 4), r = 3, eps_tilde = (0, 4), scale = 5 / 4 -> E = (0, 5)
    assert result.stdout.split() == ["False", "[[0.0,", "5.0]]"]
    emulation = next(build.glob(f"{CONFIG['emulation']['module']}*.so"))
    script = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location({CONFIG['emulation']['module']!r}, {str(emulation)!r})\n"
        "E = importlib.util.module_from_spec(spec); spec.loader.exec_module(E)\n"
        "print(E.plan(4 * 64 * 64, 'float32'))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "resident cluster=8 vpt=1 threads=512 vec=16B"
