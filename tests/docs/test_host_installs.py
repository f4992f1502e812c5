"""Each host page's install lines leave the host's pinned packages alone (issue 35 item 7).

The block after ``<!-- host install ... -->`` on docs/integrations/<host>.md installs
ssd_toolkit with ``--no-deps`` and then only requirements that pip resolves together with the
host's pins, each pinned package keeping its version; the ``avatar`` extra does not (the
reason for ``--no-deps``). Resolved by ``pip install --dry-run --ignore-installed --report``
(nothing installed) with pip's configured indexes; skipped when they cannot be reached.

The pins (torch and what requires it are left out: the host brings its own CUDA build, and
resolving one costs about 40 s of downloads):
- DreamWaltz-G: diffusers 0.24.0, huggingface_hub 0.23.4, transformers 4.44.2 (the versions
  its guidance ran under here, issue 35), numpy 2.1.2, tqdm 4.66.4 (its requirements.txt).
- DreamWaltz (requirements.txt, commit 2a699b5): huggingface_hub 0.16.2, transformers 4.30.2,
  numpy 1.24.1, tqdm 4.64.1; its diffusers 0.21.0.dev0 is a git build, smplx 0.1.28 needs torch.
- threestudio (requirements.txt): omegaconf 2.3.0; lightning 2.0.0 needs torch (resolved once
  by hand with torch 2.13.0: 70 packages, no clash; it asks numpy >= 1.17.2 and tqdm >= 4.57).
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST_PINS = {
    "dreamwaltz-g": {"diffusers": "0.24.0", "huggingface-hub": "0.23.4", "transformers": "4.44.2", "numpy": "2.1.2",
                     "tqdm": "4.66.4"},
    "dreamwaltz": {"huggingface-hub": "0.16.2", "transformers": "4.30.2", "numpy": "1.24.1", "tqdm": "4.64.1"},
    "threestudio": {"omegaconf": "2.3.0"},
}  # fmt: skip
CORE_DEPENDENCIES = {"numpy", "tqdm"}  # pyproject.toml's [project] dependencies, by name
INSTALL_BLOCK = re.compile(r"<!-- host install: [^>]*-->\s*\n[ \t]*```bash\n(.*?)[ \t]*```", re.DOTALL)


def install_lines(host):
    """The ``pip install`` commands of the host page's install block, as argument lists."""
    found = INSTALL_BLOCK.findall((ROOT / "docs" / "integrations" / f"{host}.md").read_text())
    assert len(found) == 1, f"{host}.md: expected one <!-- host install --> block, got {len(found)}"
    lines = [shlex.split(line, comments=True) for line in found[0].splitlines()]
    return [args for args in lines if args[:2] == ["pip", "install"]]


def _name(requirement):
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def dry_run(requirements, report):
    """``pip install --dry-run`` of ``requirements`` into nothing: ``(returncode, stderr)``."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), *requirements]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory):
    """host -> (returncode, stderr, {name: version}) for its pins + its install lines, and
    "avatar-extra" for DreamWaltz-G's pins + the avatar extra; all resolved at once."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    avatar = json.loads(re.search(r"^avatar = (\[.*\])", pyproject, re.M).group(1))
    tmp = tmp_path_factory.mktemp("pip")
    probe = dry_run(["--no-deps", f"transformers=={HOST_PINS['dreamwaltz-g']['transformers']}"], tmp / "probe.json")
    jobs = {}
    for host, pins in HOST_PINS.items():
        extra = [r for args in install_lines(host)[1:] for r in args[2:] if not r.startswith("-")]
        jobs[host] = dry_run([f"{n}=={v}" for n, v in pins.items()] + extra, tmp / f"{host}.json")
    pins = [f"{n}=={v}" for n, v in HOST_PINS["dreamwaltz-g"].items()]
    moved = [r for r in avatar if _name(r) in HOST_PINS["dreamwaltz-g"]]  # diffusers>=0.30, transformers>=4.40
    jobs["avatar-extra"] = dry_run(pins + moved, tmp / "avatar-extra.json")
    if probe.wait(timeout=600) != 0:  # the others ran alongside: wall time, not CPU, saved
        for job in jobs.values():
            job.kill()
        pytest.skip(f"pip cannot reach an index holding the hosts' pins: {probe.stderr.read().strip()[-300:]}")
    out = {}
    for key, job in jobs.items():
        code = job.wait(timeout=600)
        report = tmp / f"{key}.json"
        versions = {} if code else {_name(i["metadata"]["name"]): i["metadata"]["version"]
                                    for i in json.loads(report.read_text())["install"]}  # fmt: skip
        out[key] = (code, job.stderr.read(), versions)
    return out


@pytest.mark.parametrize("host", sorted(HOST_PINS))
def test_install_lines_install_ssd_toolkit_without_its_dependencies(host):
    lines = install_lines(host)
    assert lines and lines[0] == ["pip", "install", "--no-deps", "ssd_toolkit"], lines
    for args in lines[1:]:  # the rest: plain requirements (no --upgrade), resolved with the pins below
        assert all(not a.startswith("-") for a in args[2:]) and "ssd-toolkit" not in map(_name, args[2:]), args


@pytest.mark.parametrize("host", sorted(HOST_PINS))
def test_install_lines_resolve_with_the_hosts_pins_unchanged(host, resolutions):
    code, stderr, versions = resolutions[host]
    assert code == 0, stderr[-2000:]
    assert {n: versions.get(n) for n in HOST_PINS[host]} == HOST_PINS[host]
    assert CORE_DEPENDENCIES <= set(versions)  # what --no-deps skipped is there


def test_the_avatar_extra_would_move_dreamwaltz_g_pins(resolutions):
    code, stderr, _ = resolutions["avatar-extra"]
    assert code != 0 and "diffusers" in stderr and ("conflict" in stderr or "ResolutionImpossible" in stderr), stderr[-2000:]


def test_core_dependencies_match_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text()
    listed = json.loads(re.search(r"^dependencies = (\[.*\])", pyproject, re.M).group(1))
    assert {_name(r) for r in listed} == CORE_DEPENDENCIES
