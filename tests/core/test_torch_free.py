"""``import ssd_toolkit`` never imports torch: the NumPy core tests pass with torch blocked.

A subprocess makes ``import torch`` raise ImportError (a meta-path finder installed before
anything else runs), then runs the core test files: every NumPy test must pass and every
torch test must skip, and nothing may have imported torch on the way.
"""

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent  # tests/core
ROOT = TESTS.parents[1]
CORE_TESTS = [
    "test_estimate_api.py",
    "test_estimators.py",
    "test_terms_and_schedules.py",
    "test_timesteps.py",
    "test_weighting.py",
    "test_diagnostics.py",
]

BLOCK_TORCH_AND_RUN = """
import sys

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("torch is blocked: the torch-free core test", name=name)

sys.meta_path.insert(0, BlockTorch())
import pytest
code = pytest.main(["-q", "-x", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnraisableExceptionWarning",
                    *sys.argv[1:]])
assert "torch" not in sys.modules, "something imported torch"
sys.exit(int(code))
"""


def test_numpy_core_tests_pass_without_torch():
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH_AND_RUN, *(str(TESTS / name) for name in CORE_TESTS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary, summary


def test_import_and_numpy_calls_do_not_import_torch():
    code = (
        "import sys, numpy as np, ssd_toolkit\n"
        "c = np.ones((2, 3)); n = c + np.arange(3)\n"
        "ssd_toolkit.estimate(c, 0 * c, n, [0, 999], 100, return_stats=True)\n"
        "ssd_toolkit.get_estimator('ssd-no-vr')(c, 0 * c, n, [0, 1]); ssd_toolkit.backends()\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
