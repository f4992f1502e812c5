"""Torch CUDA tensors -> one fused kernel launch (``ssd_toolkit._C.estimate_cuda``): the CUDA
kernel of the Python-defined op (``op.py``), where the C++ op library is not built.

It avoids views and device switches it does not need (a few microseconds each), because the
launch itself takes about as long. Nothing here synchronises the device or copies array data
to the host; ``t`` arrives as the route made it (``backend.TorchTensors.timesteps``).

Self-test: the first launch on each device runs ``selftest.passed`` first (selftest.py:
the kernel against PyTorch eager; ``SSD_TOOLKIT_CUDA_SELFTEST`` says whether a mismatch
falls back to the eager ops, raises, or the test is skipped).
"""

from __future__ import annotations


import torch

from ...engine import extension as _extension
from ...engine.dtypes import FLOAT_DTYPES
from ..batch import STAT_NAMES
from . import selftest

_DTYPE_NAMES = {getattr(torch, name): name for name in FLOAT_DTYPES}


def launch_torch(c, u, n, out, t_dev, t_scalar, M, stats, B, N):
    """Launches the kernel on torch tensors (asynchronous, on the current stream).

    Args:
        c, u, n: C-contiguous CUDA tensors of ``B * N`` elements, one dtype, one device.
        out: a C-contiguous tensor like ``c`` that receives E.
        t_dev: float64 contiguous ``[B]`` tensor on that device, or None (use t_scalar).
        t_scalar: timestep of every sample when ``t_dev`` is None.
        M: float threshold.
        stats: None or a float64 ``[6, B]`` contiguous tensor on that device (filled).
        B, N: batch size and sample size.
    """
    index = c.device.index
    args = (
        c.data_ptr(),
        u.data_ptr(),
        n.data_ptr(),
        out.data_ptr(),
        0 if t_dev is None else t_dev.data_ptr(),
        float(t_scalar),
        0 if stats is None else stats.data_ptr(),
        B,
        N,
        _DTYPE_NAMES[c.dtype],
        float(M),
    )
    module = _extension.load()
    if torch.cuda.current_device() == index:
        if not selftest.passed(module, c.device):
            return _launch_eager(c, u, n, out, t_dev, t_scalar, M, stats, B, N)
        module.estimate_cuda(*args, _raw_stream(index))
    else:
        with torch.cuda.device(index):
            if not selftest.passed(module, c.device):
                return _launch_eager(c, u, n, out, t_dev, t_scalar, M, stats, B, N)
            module.estimate_cuda(*args, _raw_stream(index))


def _launch_eager(c, u, n, out, t_dev, t_scalar, M, stats, B, N):
    """What ``launch_torch`` writes, computed by PyTorch eager ops (a failed self-test)."""
    from .eager import estimate_torch  # noqa: PLC0415

    t_vec = t_dev if t_dev is not None else torch.full((B,), float(t_scalar), dtype=torch.float64, device=c.device)
    E, named = estimate_torch(c.reshape(B, N), u.reshape(B, N), n.reshape(B, N), t_vec, float(M))
    out.view(B, N).copy_(E)
    if stats is not None:
        stats.copy_(torch.stack([named[name] for name in STAT_NAMES]))


def _raw_stream(index):
    """The current ``cudaStream_t`` of device ``index`` as an int."""
    get = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    return get(index) if get is not None else torch.cuda.current_stream(index).cuda_stream
