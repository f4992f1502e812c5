"""The package exports ``ThreestudioGuidance`` (docs/your-own-loop.md) and still imports no torch."""

import subprocess
import sys

CODE = """
import sys
import ssd_toolkit.integrations.threestudio as package
assert "torch" not in sys.modules, "importing the package imported torch"
assert "ThreestudioGuidance" in package.__all__, package.__all__
from ssd_toolkit.integrations.threestudio import ThreestudioGuidance
from ssd_toolkit.integrations.threestudio.adapter import ThreestudioGuidance as defined
assert ThreestudioGuidance is defined
try:
    package.NoSuchName
except AttributeError as exc:
    assert "NoSuchName" in str(exc), exc
else:
    raise AssertionError("an unknown name did not raise AttributeError")
"""


def test_threestudio_guidance_is_exported_lazily():
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
