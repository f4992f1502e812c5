import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Hypothesis profiles (docs/testing.md). "quick", the default and CI's: 20 examples per property,
# the same ones every run (derandomized, nothing written to .hypothesis/). "thorough", on demand
# (HYPOTHESIS_PROFILE=thorough): 500 random examples, failures kept in .hypothesis/ for replay.
# Neither has a deadline or a too-slow check: a loaded machine must not fail a property.
_UNTIMED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow], "print_blob": True}
settings.register_profile("quick", max_examples=20, derandomize=True, database=None, **_UNTIMED)
settings.register_profile("thorough", max_examples=500, derandomize=False, **_UNTIMED)  # explicit: under CI hypothesis defaults to derandomize
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))

try:  # two torch threads on two busy cores were measured ~100x slower
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None


@pytest.fixture
def rng():
    return np.random.default_rng(0)
