"""``ssd_toolkit.estimate``: the one entry point; the caller's array backend does the rest.

The backend is found from ``eps_cond``'s type (``ssd_toolkit.frameworks``, cached per
type); it tries its fast path, else validates once (``frameworks.prepare``) and runs the
batch where its data live. The result comes back in the caller's library.
"""

from __future__ import annotations

from .engine.dispatch import BACKENDS
from .frameworks import framework_of

__all__ = ["BACKENDS", "estimate"]


def estimate(eps_cond, eps_uncond, noise, t, M, *, return_stats=False, backend="auto"):
    """The Stable Score Distillation estimator (Algorithm 1), per sample.

    Args:
        eps_cond: conditional noise prediction, ``[B, ...]``; float16, bfloat16, float32
            or float64; a NumPy array, a torch tensor, a JAX array, a CuPy/Numba array or
            any array-API array (see ``ssd_toolkit.frameworks``, docs/api.md).
        eps_uncond: unconditional noise prediction, same shape, dtype, library and device.
        noise: the noise that made ``x_t``, same shape, dtype, library and device.
        t: timesteps, a scalar or a length-``B`` vector (ints or floats, finite).
        M: the threshold (finite). ``t_b > M`` gives ``h_b = eps_cond_b - eps_uncond_b``;
            ``t_b <= M`` gives ``(||h_b|| / ||eps_tilde_b||) * eps_tilde_b``.
        return_stats: also return the per-sample statistics of the same pass.
        backend: ``"auto"`` (compiled kernel if built, else the NumPy reference with a
            one-time warning), ``"compiled"`` (error if not built), ``"reference"``
            (NumPy, float64, host data) or ``"torch"`` (PyTorch eager ops on any device;
            torch inputs only).

    Returns:
        ``E``, with eps_cond's shape, dtype, library and device; with ``return_stats``,
        ``(E, stats)`` where ``stats`` maps ``r``, ``h_norm``, ``eps_tilde_norm``,
        ``eps_cond_norm``, ``noise_norm``, ``scale`` to float64 ``[B]`` arrays and
        ``mode_seeking`` to a bool ``[B]`` array (True where ``t_b <= M``), in the
        caller's library and device.

    Raises:
        TypeError: non-array inputs, mixed libraries, integer/complex dtypes or timesteps.
        ValueError: 0-d inputs, mismatched shapes/dtypes/devices, wrong-length or
            non-finite ``t``, non-finite ``M``, unknown backend.
        RuntimeError: a CUDA input without a CUDA build, or ``backend="compiled"``
            without a compiled module.

    Warns:
        UserWarning: one-element samples (likely a missing batch dimension), and torch
            inputs that require grad (the result is detached; see docs/api.md).
    """
    return framework_of(eps_cond).estimate(eps_cond, eps_uncond, noise, t, M, return_stats, backend)
