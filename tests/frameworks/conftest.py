import os

import numpy as np
import pytest

# JAX in the pytest process stays on the CPU and reserves no GPU memory (it would take 75% of
# it at its first use otherwise); the JAX GPU checks run in processes of their own
# (test_jax_cuda.py). An explicit JAX_PLATFORMS is respected.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from ssd_toolkit.reference import estimate_reference

M = 200.0
T = np.array([100, 300, 50, 900], dtype=np.int32)  # two samples on each side of M


@pytest.fixture
def inputs():
    """float32 [4, 3, 5, 6] NumPy eps_cond, eps_uncond, noise (seed 0)."""
    rng = np.random.default_rng(0)
    return [rng.standard_normal((4, 3, 5, 6)).astype(np.float32) for _ in range(3)]


def reference(c, u, n, t=T, M=M):
    """The float64 NumPy reference: (E [B, N], stats)."""
    B = np.asarray(c).shape[0]
    rows = [np.asarray(x, dtype=np.float64).reshape(B, -1) for x in (c, u, n)]
    return estimate_reference(*rows, np.broadcast_to(np.asarray(t, np.float64), (B,)), M)
