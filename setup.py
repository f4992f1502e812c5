"""Packaging, and the ninja build of the compiled module ``ssd_toolkit._C``.

The repository's toy/ and integrations/ install under ssd_toolkit. The C++ (and, when nvcc
is found, CUDA) sources are compiled with the flags in csrc/build_config.json, the same
file CMakeLists.txt reads. A failed build only warns: the package still installs and
runs on the NumPy reference (``ssd_toolkit.backends()`` says why).

Environment:
    SSD_TOOLKIT_CUDA=0           never compile CUDA, even when nvcc is found.
    SSD_TOOLKIT_CUDA_ARCHS       e.g. "80;90" (default from build_config.json; PTX is
                                 added for the highest).
    SSD_TOOLKIT_REQUIRE_BUILD=1  make a failed compile an install error.
    MAX_JOBS                     parallel compile jobs (default 2).
    CXX, CUDA_HOME               the host compiler and the CUDA toolkit.
"""

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(ROOT, "csrc", "build_config.json")) as _config_file:
    CONFIG = json.load(_config_file)

# Where each installed package tree lives in the repository: toy/ and integrations/ install
# under ssd_toolkit. Every folder below these roots that holds an __init__.py is a package;
# tests/core/test_core_layout.py checks that no folder holding Python files is left out.
PACKAGE_ROOTS = {"ssd_toolkit": "ssd_toolkit", "ssd_toolkit.toy": "toy", "ssd_toolkit.integrations": "integrations"}


def package_dirs(root=ROOT):
    """``{package name: folder}`` for every package under ``PACKAGE_ROOTS``."""
    found = {}
    for name, folder in PACKAGE_ROOTS.items():
        for init in sorted(Path(root, folder).rglob("__init__.py")):
            relative = init.parent.relative_to(Path(root, folder))
            if "__pycache__" not in relative.parts:
                found[".".join((name, *relative.parts))] = init.parent.relative_to(root).as_posix()
    return found


PACKAGE_DIR = package_dirs()


def find_cuda():
    """``(nvcc, cuda_home)``: CUDA_HOME, else nvcc on PATH, else /usr/local/cuda; or None.

    The toolkit root is the one holding include/cuda_runtime.h (nvcc on PATH may be a
    wrapper script outside the toolkit).
    """
    homes = [os.environ["CUDA_HOME"]] if os.environ.get("CUDA_HOME") else []
    on_path = shutil.which("nvcc")
    if on_path:
        homes.append(os.path.dirname(os.path.dirname(os.path.realpath(on_path))))
    homes.append("/usr/local/cuda")
    for home in homes:
        if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            nvcc = os.path.join(home, "bin", "nvcc")
            nvcc = nvcc if os.access(nvcc, os.X_OK) else on_path
            if nvcc:
                return nvcc, home
    return None


def gencode_flags(archs):
    """``-gencode`` flags for "80;86;90" (also "8.6", "90a"); PTX for the highest."""
    items = [a.replace(".", "") for a in re.split(r"[;, ]+", archs.strip()) if a]
    bad = [a for a in items if not re.fullmatch(r"\d{2,3}[af]?", a)]
    if not items or bad:
        raise ValueError(f"SSD_TOOLKIT_CUDA_ARCHS: expected e.g. '80;86;90', got {archs!r}")
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in items]
    top = max(items, key=lambda a: int(re.match(r"\d+", a).group()))
    return flags + [f"-gencode=arch=compute_{top},code=compute_{top}"]


def cuda_plan():
    """(nvcc, cuda_home, .cu sources, host .cpp sources) or None with the reason."""
    if os.environ.get("SSD_TOOLKIT_CUDA", "1") == "0":
        return None, "SSD_TOOLKIT_CUDA=0"
    cu = sorted(glob.glob(os.path.join(ROOT, CONFIG["cuda"]["source_glob"])))
    if not cu:
        return None, f"no {CONFIG['cuda']['source_glob']}"
    found = find_cuda()
    if found is None:
        return None, "no CUDA toolkit found (CUDA_HOME, nvcc on PATH, /usr/local/cuda)"
    host = sorted(glob.glob(os.path.join(ROOT, CONFIG["cuda"]["host_source_glob"])))
    return (*found, cu, host), None


def object_name(src):
    return os.path.splitext(os.path.basename(src))[0] + ".o"


def build_commands(output, build_dir):
    """Returns ``(variables, steps)``: ninja-style steps ``(rule, out, inputs)``."""
    import pybind11  # noqa: PLC0415 - a build requirement

    cxx_cfg = CONFIG["cxx"]
    includes = [sysconfig.get_paths()["include"], pybind11.get_include()]
    includes += [os.path.join(ROOT, d) for d in CONFIG["include_dirs"]]
    cflags = [f"-std=c++{cxx_cfg['standard']}", "-fPIC", *cxx_cfg["flags"], *(f"-I{d}" for d in includes)]
    ldflags = ["-shared", *cxx_cfg["link_flags"]]
    cpp = [os.path.join(ROOT, s) for s in cxx_cfg["sources"]]
    steps, cuda_flags = [], []
    plan, reason = cuda_plan()
    if plan:
        nvcc, cuda_home, cu, host = plan
        define = f"-D{CONFIG['cuda']['define']}"
        cflags += [define, f"-I{cuda_home}/include"]
        archs = os.environ.get("SSD_TOOLKIT_CUDA_ARCHS") or CONFIG["cuda"]["default_archs"]
        cuda_flags = [x for f in CONFIG["cuda"]["flags"] for x in shlex.split(f)]
        cuda_flags += [define, *gencode_flags(archs), *(f"-I{d}" for d in includes)]
        ldflags += [f"-L{cuda_home}/lib64", *(f"-l{lib}" for lib in CONFIG["cuda"]["libraries"])]
        cpp += host
        steps += [("cuda_compile", os.path.join(build_dir, object_name(s)), [s]) for s in cu]
        print(f"ssd_toolkit: compiling CUDA with {nvcc} for {archs}", file=sys.stderr)
    else:
        nvcc = ""
        print(f"ssd_toolkit: CPU-only build ({reason})", file=sys.stderr)
    steps += [("compile", os.path.join(build_dir, object_name(s)), [s]) for s in cpp]
    steps.append(("link", output, [out for _, out, _ in steps]))
    variables = {
        "cxx": os.environ.get("CXX", "c++"),
        "nvcc": nvcc,
        "cflags": cflags,
        "cuda_flags": cuda_flags,
        "ldflags": ldflags,
    }
    return variables, steps


RULES = {
    "compile": "$cxx -MMD -MF $out.d $cflags -c $in -o $out",
    "cuda_compile": "$nvcc -MD -MF $out.d $cuda_flags -c $in -o $out",
    "link": "$cxx $in -o $out $ldflags",
}


def write_ninja(path, variables, steps):
    lines = ["ninja_required_version = 1.3"]
    lines += [f"{k} = {v if isinstance(v, str) else shlex.join(v)}" for k, v in variables.items()]
    for name, command in RULES.items():
        lines += [f"rule {name}", f"  command = {command}"]
        if name != "link":
            lines += ["  depfile = $out.d", "  deps = gcc"]
    for rule, out, inputs in steps:
        lines.append(f"build {out}: {rule} {' '.join(inputs)}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def run_steps(variables, steps):
    """Fallback when the ninja binary is missing: the same commands, one after another."""
    for rule, out, inputs in steps:
        command = RULES[rule].replace("$in", shlex.join(inputs)).replace("$out", shlex.quote(out))
        for k, v in variables.items():
            command = command.replace(f"${k}", v if isinstance(v, str) else shlex.join(v))
        subprocess.run(command, shell=True, check=True)


def find_ninja():
    try:
        import ninja  # noqa: PLC0415

        return os.path.join(ninja.BIN_DIR, "ninja")
    except ImportError:
        return shutil.which("ninja")


class NinjaBuildExt(build_ext):
    """Builds ``ssd_toolkit._C`` with ninja; a failure warns and installs without it."""

    def build_extension(self, ext):
        output = os.path.abspath(self.get_ext_fullpath(ext.name))
        build_dir = os.path.abspath(os.path.join(self.build_temp, "ssd_toolkit_C"))
        os.makedirs(build_dir, exist_ok=True)
        os.makedirs(os.path.dirname(output), exist_ok=True)
        try:
            variables, steps = build_commands(output, build_dir)
            ninja = find_ninja()
            if ninja:
                write_ninja(os.path.join(build_dir, "build.ninja"), variables, steps)
                jobs = os.environ.get("MAX_JOBS", "2")
                subprocess.run([ninja, "-C", build_dir, "-j", jobs], check=True)
            else:
                run_steps(variables, steps)
        except Exception as exc:  # no compiler, no pybind11, a compile error: still install
            if os.environ.get("SSD_TOOLKIT_REQUIRE_BUILD") == "1":
                raise
            self.extensions = [e for e in self.extensions if e is not ext]  # nothing to copy later
            print(
                f"WARNING: ssd_toolkit: building the compiled module failed ({exc}); installing the "
                "pure-Python package, which uses the NumPy reference backend.",
                file=sys.stderr,
            )


setup(
    packages=list(PACKAGE_DIR),
    package_dir=PACKAGE_DIR,
    ext_modules=[Extension(CONFIG["extension"], sources=CONFIG["cxx"]["sources"])],
    cmdclass={"build_ext": NinjaBuildExt},
)
