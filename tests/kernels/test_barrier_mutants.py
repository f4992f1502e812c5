"""Every barrier of the CUDA kernels is needed, and the emulation shows it.

For each ``__syncthreads()``, ``cluster.sync()`` and split cluster-barrier arrive / wait in
csrc/cuda/ssd_kernels.cuh (found in the source, so a new one is covered), a copy of csrc/
with that one statement deleted is built into the CPU emulation and the emulation's smoke
tests (every path, width and dtype under the forward, reverse and shuffled schedules, the
cluster-wait test and the launch-plan variants) must fail on it: a wrong result, a
difference between schedules, a read of departed shared memory or a deadlock.

About 25 s per mutant on 2 cores (one g++ build each), so opt-in:
``SSD_TOOLKIT_BARRIER_MUTANTS=1 python -m pytest -q tests/kernels/test_barrier_mutants.py``.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "csrc" / "cuda" / "ssd_kernels.cuh"
BARRIER = re.compile(r"\b(__syncthreads|cluster\.sync|__cluster_barrier_arrive(?:_relaxed)?|__cluster_barrier_wait)\(\);")

pytestmark = pytest.mark.skipif(os.environ.get("SSD_TOOLKIT_BARRIER_MUTANTS") != "1",
                                reason="opt-in: SSD_TOOLKIT_BARRIER_MUTANTS=1 (a g++ build per mutant)")


def _barriers():
    return [(i, m.group(0)) for i, line in enumerate(KERNELS.read_text().splitlines(), 1)
            for m in [BARRIER.search(line)] if m and not line.lstrip().startswith("//")]


def test_the_source_has_the_barriers_this_test_expects():
    kinds = sorted({b for _, b in _barriers()})
    assert kinds == ["__cluster_barrier_arrive();", "__cluster_barrier_arrive_relaxed();", "__cluster_barrier_wait();",
                     "__syncthreads();", "cluster.sync();"], kinds
    assert len(_barriers()) >= 9


@pytest.mark.parametrize("line,barrier", _barriers(), ids=lambda v: str(v).replace("();", ""))
def test_deleting_the_barrier_fails_the_emulation_tests(tmp_path, line, barrier):
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    mutant = tmp_path / "csrc" / "cuda" / "ssd_kernels.cuh"
    lines = mutant.read_text().splitlines(keepends=True)
    lines[line - 1] = lines[line - 1].replace(barrier, ";  /* mutant: barrier deleted */", 1)
    mutant.write_text("".join(lines))
    env = {**os.environ, "SSD_TOOLKIT_EMULATION_SOURCE": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("SSD_TOOLKIT_EMULATION_SANITIZE", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", "smoke",
         str(ROOT / "tests" / "kernels" / "test_cuda_emulation.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    out = result.stdout + result.stderr
    assert "building the CUDA emulation failed" not in out, out[-3000:]
    assert result.returncode == 1 and re.search(r"\b1 failed\b", out), (
        f"line {line} ({barrier}) deleted and the emulation's smoke tests still pass:\n{out[-3000:]}"
    )
    failure = next((ln for ln in out.splitlines() if ln.startswith("E ")), "")
    print(f"line {line} {barrier}: {failure[:200]}")
