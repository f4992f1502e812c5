"""torch when it is installed, else None: the NumPy core tests also run without torch
(tests/core/test_torch_free.py runs them with ``import torch`` blocked)."""

import pytest

try:
    import torch
except ImportError:
    torch = None

requires_torch = pytest.mark.skipif(torch is None, reason="needs torch")


def torch_param(value):
    """``value`` as a parameter that is skipped without torch."""
    return pytest.param(value, marks=requires_torch)
