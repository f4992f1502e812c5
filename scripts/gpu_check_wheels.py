"""Checks the wheels carried to the GPU machine (used by fetch_gpu_wheels.sh and gpu_check.sh).

    python scripts/gpu_check_wheels.py scripts/gpu_wheels.txt .whl [--allow-missing]

The list must hold pinned ``name==version`` lines. When the folder exists it must hold
exactly one wheel per listed package at that version (two versions of one package stop
the install there), each tagged py3-none-any or cp312 manylinux x86-64, under 64 MiB
together (the device tool's limit for a whole working tree), and every requirement of each
wheel (extras aside) must be on the GPU machine already (scripts/gpu_machine_packages.txt)
or carried too. Finally ``pip install --dry-run --no-deps --no-index`` for Python 3.12 on
manylinux x86-64 must accept them. ``--allow-missing``: an absent folder only warns.

Exit status 0 when everything holds, 1 otherwise (each problem on its own line).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

LIMIT_BYTES = 64 * 2**20
GLIBC_MINOR_MAX = 39  # manylinux_2_N wheels up to N = 39 run on the GPU machine's image
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(GLIBC_MINOR_MAX, 16, -1)] + ["manylinux2014_x86_64",
                                                                                 "manylinux1_x86_64"]
MACHINE_LIST = Path(__file__).with_name("gpu_machine_packages.txt")
# Requirements that the listed packages declare but never import on Python 3.12.
UNNEEDED_AT_RUN_TIME = {"importlib-metadata": "diffusers imports it only on Python < 3.8, controlnet_aux never"}
WHEEL_TAG = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def read_names(path):
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip() and not line.startswith("#")]


def parse_list(path):
    """``{canonical name: version}`` of the pinned list; raises ValueError on a bad line."""
    pins = {}
    for line in read_names(path):
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        if not match:
            raise ValueError(f"{path}: expected 'name==version' lines, got {line!r}")
        pins[canonical(match.group(1))] = match.group(2)
    if not pins:
        raise ValueError(f"{path}: expected at least one 'name==version' line, got none")
    return pins


def tag_ok(m):
    if (m["py"], m["abi"], m["plat"]) == ("py3", "none", "any"):
        return True
    return m["py"] in ("cp312", "py3") and m["abi"] in ("cp312", "abi3", "none") and all(
        p in PLATFORMS or p == "manylinux2010_x86_64" for p in m["plat"].split("."))


def requirements(wheel):
    """Names of a wheel's unconditional requirements (no extras, no Python < 3.12 markers)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode("utf-8", "replace").splitlines()
    names = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        spec = line.split(":", 1)[1].strip()
        marker = spec.split(";", 1)[1] if ";" in spec else ""
        if "extra" in marker or re.search(r"python_version\s*<\s*['\"]3\.([0-9]|1[01])['\"]", marker):
            continue
        names.append(canonical(re.match(r"[A-Za-z0-9._-]+", spec).group(0)))
    return names


def check(list_path, folder, allow_missing=False):
    """Returns ``(problems, notes)``: lists of one-line strings."""
    try:
        pins = parse_list(list_path)
    except (OSError, ValueError) as exc:
        return [str(exc)], []
    folder = Path(folder)
    if not folder.is_dir():
        message = f"{folder}/: not fetched (run bash scripts/fetch_gpu_wheels.sh before a GPU run)"
        return ([], [message]) if allow_missing else ([message], [])
    problems, notes, found = [], [], {}
    wheels = sorted(folder.glob("*.whl"))
    for wheel in wheels:
        m = WHEEL_TAG.match(wheel.name)
        if not m:
            problems.append(f"{wheel.name}: not a wheel file name (name-version-py-abi-platform.whl)")
            continue
        name = canonical(m["name"])
        if not tag_ok(m):
            problems.append(f"{wheel.name}: expected py3-none-any or cp312 manylinux x86-64, got "
                            f"{m['py']}-{m['abi']}-{m['plat']}")
        if name in found:
            problems.append(f"{name}: two wheels ({found[name].name}, {wheel.name}); keep one version")
        found[name] = wheel
        if name not in pins:
            problems.append(f"{wheel.name}: not in {list_path}")
        elif m["version"] != pins[name]:
            problems.append(f"{name}: expected version {pins[name]} ({list_path}), got {m['version']}")
    problems += [f"{name}=={version}: no wheel in {folder}/" for name, version in pins.items() if name not in found]
    total = sum(w.stat().st_size for w in wheels)
    if total > LIMIT_BYTES:
        problems.append(f"{folder}/: expected under {LIMIT_BYTES // 2**20} MiB, got {total / 2**20:.1f} MiB")
    machine = {canonical(n) for n in read_names(MACHINE_LIST)}
    for name, wheel in found.items():
        for req in requirements(wheel):
            if req in machine or req in found:
                continue
            if req in UNNEEDED_AT_RUN_TIME:
                notes.append(f"{name} requires {req}: not carried ({UNNEEDED_AT_RUN_TIME[req]})")
            else:
                problems.append(f"{name} requires {req}: neither on the GPU machine ({MACHINE_LIST.name}) nor in "
                                f"{list_path}; add it to the list")
    if wheels and not problems:
        problems += pip_dry_run(wheels)
    notes.append(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB: " + ", ".join(w.name for w in wheels))
    return problems, notes


def pip_dry_run(wheels):
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS),
               "--target", "/tmp/ssd_gpu_wheels_dry_run", *map(str, wheels)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"pip install --dry-run could not run: {exc}"]
    if done.returncode != 0:
        return ["pip install --dry-run refused the wheels: " + " | ".join(done.stderr.strip().splitlines()[-3:])]
    return []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel_list")
    parser.add_argument("folder")
    parser.add_argument("--allow-missing", action="store_true", help="an absent folder only warns")
    args = parser.parse_args(argv)
    problems, notes = check(args.wheel_list, args.folder, args.allow_missing)
    for line in notes:
        print(f"wheels: {line}")
    for line in problems:
        print(f"wheels: PROBLEM: {line}", file=sys.stderr)
    print(f"wheels: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
