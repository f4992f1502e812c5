"""Random SSD inputs ``(eps_cond, eps_uncond, noise, ...)`` for tests and bench/.

One builder for every caller: standard-normal float64 draws from a NumPy generator, in the
order cond, uncond, noise (then any extra arrays), optionally mixed so that eps_cond is
correlated with the noise as in a real UNet, then cast to the requested library and dtype.
The float64 draws make the values independent of the dtype and library: the same seed gives
the same data (up to rounding) for every dtype, in NumPy and in torch.

Importable by bare name: pytest puts tests/ on sys.path (pyproject ``pythonpath``); bench/
and scripts/ insert it themselves. torch is imported only for ``library="torch"``.
"""

from __future__ import annotations

import numpy as np

LIBRARIES = ("numpy", "torch")


def as_array(x, dtype, library="numpy", device="cpu"):
    """The float64 NumPy array ``x`` as a ``library`` array of ``dtype`` (on ``device`` for torch).

    Args:
        x: NumPy array (float64 draws).
        dtype: "float16", "bfloat16" (torch only), "float32" or "float64".
        library: "numpy" or "torch".
        device: torch device (library="torch" only).
    """
    if library == "numpy":
        if dtype == "bfloat16":
            raise ValueError("dtype: NumPy has no bfloat16, use library='torch'")
        return x.astype(dtype)
    if library != "torch":
        raise ValueError(f"library: expected one of {LIBRARIES}, got {library!r}")
    import torch  # noqa: PLC0415 - torch only when asked for

    return torch.from_numpy(x).to(device=device, dtype=getattr(torch, dtype))


def make_inputs(shape, dtype="float32", library="numpy", seed=0, device="cpu", count=3, cond_noise_mix=None):
    """``count`` standard-normal arrays of ``shape``: cond, uncond, noise, then extras.

    Args:
        shape: full shape ``[B, ...]``.
        dtype: "float16", "bfloat16" (torch only), "float32" or "float64".
        library: "numpy" or "torch".
        seed: NumPy seed, or a ``np.random.Generator`` to draw from (it advances).
        device: torch device (library="torch" only).
        count: how many arrays (>= 3); the 4th is e.g. a negative-prompt prediction.
        cond_noise_mix: ``(a, b)``: eps_cond becomes ``a * eps_cond + b * noise`` (in float64,
            before the cast), correlated with the noise as in practice; None leaves it.

    Returns:
        a list of ``count`` arrays, all of ``library``, ``dtype`` and ``shape``.
    """
    if count < 3:
        raise ValueError(f"count: expected >= 3 (cond, uncond, noise), got {count}")
    rng = np.random.default_rng(seed)  # a Generator passes through unchanged
    arrays = [rng.standard_normal(shape) for _ in range(count)]
    if cond_noise_mix is not None:
        a, b = cond_noise_mix
        arrays[0] = a * arrays[0] + b * arrays[2]
    return [as_array(x, dtype, library, device) for x in arrays]
