import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

try:  # two torch threads on two busy cores were measured ~100x slower
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None


@pytest.fixture
def rng():
    return np.random.default_rng(0)
