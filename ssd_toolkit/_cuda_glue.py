"""CUDA data -> one fused kernel launch (``ssd_toolkit._C.estimate_cuda``).

PyTorch CUDA tensors and ``__cuda_array_interface__`` producers (CuPy, Numba) are passed
to the kernel as raw device addresses. The output (and the stats, when asked for) are
allocated by the caller's own library on the inputs' device; the launch goes on that
library's current stream of that device. Nothing here synchronises the device or copies
array data to the host. Timesteps: a host scalar travels as ``t_scalar`` (no copy); a
device tensor is used in place (cast to float64 on device if needed; its values are not
checked for finiteness, which would need a host round trip); a host vector is copied to
the device once (asynchronously).
"""

from __future__ import annotations

import math

import numpy as np

from . import _arrays, _extension
from .reference import STAT_NAMES


def estimate_cuda(batch, t, M, return_stats):
    """Runs the fused CUDA kernel on a validated batch.

    Args:
        batch: ``_arrays.Batch`` of device arrays (torch CUDA tensors or a
            ``__cuda_array_interface__`` producer).
        t: scalar or length-B timesteps (host or device).
        M: float threshold.
        return_stats: also return the per-sample statistics.

    Returns:
        ``E`` (caller's type, shape, dtype, device), or ``(E, stats)``.

    Raises:
        ValueError: inputs on different devices, non-contiguous CUDA-array-interface
            inputs that cannot be copied, or timesteps of the wrong shape/device.
        TypeError: a ``__cuda_array_interface__`` producer whose arrays cannot be allocated.
        RuntimeError: the launch failed (the CUDA error is named).
    """
    if batch.library == "torch":
        return estimate_torch_cuda(
            batch.eps_cond, batch.eps_uncond, batch.noise, t, M, return_stats, batch.shape, batch.N
        )
    return _estimate_cai(batch, t, M, return_stats)


# ----------------------------------------------------------------------------- torch
# The eager path is on every training step: it avoids views and device switches it does
# not need (a few microseconds each), because the launch itself takes about as long.
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
    import torch  # noqa: PLC0415 - torch inputs only

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
        module.estimate_cuda(*args, _raw_stream(torch, index))
    else:
        with torch.cuda.device(index):
            module.estimate_cuda(*args, _raw_stream(torch, index))


def _raw_stream(torch, index):
    """The current ``cudaStream_t`` of device ``index`` as an int."""
    get = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    return get(index) if get is not None else torch.cuda.current_stream(index).cuda_stream


def _dtype_names():
    import torch  # noqa: PLC0415

    return {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float64: "float64"}


class _LazyDtypeNames(dict):
    def __missing__(self, key):
        self.update(_dtype_names())
        return dict.__getitem__(self, key)


_DTYPE_NAMES = _LazyDtypeNames()


def torch_timesteps(t, B, device):
    """``(t_dev or None, t_scalar)`` for a launch on ``device`` (no host round trip).

    Raises:
        TypeError: complex or non-numeric timesteps.
        ValueError: wrong length, non-finite host values, or a tensor on another device.
    """
    import torch  # noqa: PLC0415

    if type(t) is np.ndarray and t.ndim == 1:  # a sampler's int64 vector: one conversion
        t64 = _arrays.fast_timesteps(t, B)
        if t64 is not None:
            return torch.from_numpy(t64).to(device, non_blocking=True), 0.0
    if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t):
        return None, float(t)
    if isinstance(t, torch.Tensor) and t.device.type != "cpu":
        if t.device != device:
            raise ValueError(f"t: expected a host value or a tensor on {device} (eps_cond's device), got {t.device}")
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"t: expected real timesteps, got dtype {_arrays.dtype_name(t)}")
        if t.ndim == 0:
            return t.to(torch.float64).reshape(1).expand(B).contiguous(), 0.0
        if t.ndim != 1 or t.shape[0] != B:
            raise ValueError(f"t: expected a scalar or a vector of length B={B}, got shape {list(t.shape)}")
        return t.to(torch.float64).contiguous(), 0.0
    if (t.ndim if isinstance(t, torch.Tensor) else np.ndim(t)) == 0:
        return None, float(_arrays.validate_timesteps(t, 1)[0])
    t64 = _arrays.fast_timesteps(t, B)
    if t64 is None:
        t64 = _arrays.validate_timesteps(t, B)
    return torch.from_numpy(t64).to(device, non_blocking=True), 0.0


def estimate_torch_cuda(eps_cond, eps_uncond, noise, t, M, return_stats, shape, N):
    """The eager torch route: launch on the inputs as they are (copies only for
    non-contiguous ones), output in eps_cond's shape."""
    import torch  # noqa: PLC0415

    B = shape[0]
    device = eps_cond.device
    c = eps_cond if eps_cond.is_contiguous() else eps_cond.contiguous()
    u = eps_uncond if eps_uncond.is_contiguous() else eps_uncond.contiguous()
    n = noise if noise.is_contiguous() else noise.contiguous()
    t_dev, t_scalar = torch_timesteps(t, B, device)
    out = torch.empty(shape, dtype=eps_cond.dtype, device=device)
    stats = torch.empty((len(STAT_NAMES), B), dtype=torch.float64, device=device) if return_stats else None
    launch_torch(c, u, n, out, t_dev, t_scalar, M, stats, B, N)
    if not return_stats:
        return out
    return out, torch_stats_dict(stats, t_dev, t_scalar, M, B, device)


def torch_stats_dict(stats, t_dev, t_scalar, M, B, device):
    """Rows of the ``[6, B]`` stats tensor by name, plus ``mode_seeking`` (bool, device)."""
    import torch  # noqa: PLC0415

    out = {name: stats[i] for i, name in enumerate(STAT_NAMES)}
    if t_dev is None:
        out["mode_seeking"] = torch.full((B,), bool(t_scalar <= M), dtype=torch.bool, device=device)
    else:
        out["mode_seeking"] = t_dev <= M
    return out


# ------------------------------------------------------------------- cuda_array_interface
def _producer(x):
    """'cupy', 'numba' or the producer's top-level module name."""
    return type(x).__module__.split(".")[0]


def _cai_contiguous(x, lib):
    """``x`` if C-contiguous, else a contiguous copy made by its own library."""
    cai = x.__cuda_array_interface__
    strides = cai.get("strides")
    if strides is not None:
        itemsize = np.dtype(cai["typestr"]).itemsize
        expect, acc = [], itemsize
        for dim in reversed(cai["shape"]):
            expect.append(acc)
            acc *= dim
        if tuple(strides) != tuple(reversed(expect)) and int(np.prod(cai["shape"])) > 1:
            if lib == "cupy":
                import cupy  # noqa: PLC0415

                return cupy.ascontiguousarray(x)
            raise ValueError(
                f"eps_cond, eps_uncond, noise: expected C-contiguous {lib} arrays, got strides {tuple(strides)} "
                f"for shape {tuple(cai['shape'])}; make them contiguous first"
            )
    return x


class _CupyLib:
    def __init__(self, device_id):
        import cupy  # noqa: PLC0415

        self.xp = cupy
        self.device = cupy.cuda.Device(device_id)

    def stream(self, _x):
        return self.xp.cuda.get_current_stream().ptr

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def to_device(self, host):
        return self.xp.asarray(host)

    def device_vector(self, t):
        if isinstance(t, self.xp.ndarray):
            return t
        return None


class _NumbaLib:
    def __init__(self, device_id):
        from numba import cuda  # noqa: PLC0415

        self.cuda = cuda
        self.device = cuda.gpus[device_id]

    def stream(self, x):
        stream = x.__cuda_array_interface__.get("stream")
        return int(stream) if stream is not None else 0

    def empty(self, shape, dtype):
        return self.cuda.device_array(shape, dtype=dtype)

    def to_device(self, host):
        return self.cuda.to_device(host)

    def device_vector(self, t):
        if self.cuda.is_cuda_array(t) and not isinstance(t, np.ndarray):
            return t
        return None


def _estimate_cai(batch, t, M, return_stats):
    module = _extension.load()
    arrays = (batch.eps_cond, batch.eps_uncond, batch.noise)
    lib_name = _producer(batch.eps_cond)
    if lib_name not in ("cupy", "numba"):
        raise TypeError(
            f"eps_cond: __cuda_array_interface__ arrays from {lib_name!r} are not supported (the output must be "
            "allocated by the caller's library); pass CuPy arrays (cupy.asarray(x) wraps them without a copy), "
            "Numba device arrays or torch tensors"
        )
    arrays = [_cai_contiguous(x, lib_name) for x in arrays]
    ptrs = [int(x.__cuda_array_interface__["data"][0]) for x in arrays]
    devices = [module.cuda_pointer_device(p) if p else -1 for p in ptrs]
    if len({d for d in devices if d >= 0}) > 1:
        raise ValueError(
            "eps_cond, eps_uncond, noise: expected arrays on one CUDA device, got devices "
            + ", ".join(f"{n}=cuda:{d}" for n, d in zip(_arrays.ARRAY_ARGS, devices))
        )
    device_id = next((d for d in devices if d >= 0), module.cuda_current_device())
    lib = _CupyLib(device_id) if lib_name == "cupy" else _NumbaLib(device_id)
    B, N = batch.B, batch.N
    dtype = np.dtype(batch.dtype)
    with lib.device:
        t_vec = lib.device_vector(t)
        if t_vec is not None:
            t_dev = _cai_float64_vector(t_vec, B, lib, lib_name)
            t_scalar = 0.0
        elif (t.ndim if _arrays.is_torch_tensor(t) else np.ndim(t)) == 0:
            t_dev, t_scalar = None, float(_arrays.validate_timesteps(t, 1)[0])
        else:
            t_dev, t_scalar = lib.to_device(_arrays.validate_timesteps(t, B)), 0.0
        out = lib.empty(batch.shape, dtype)
        stats = lib.empty((len(STAT_NAMES), B), np.float64) if return_stats else None
        module.estimate_cuda(
            *ptrs,
            int(out.__cuda_array_interface__["data"][0]),
            0 if t_dev is None else int(t_dev.__cuda_array_interface__["data"][0]),
            t_scalar,
            0 if stats is None else int(stats.__cuda_array_interface__["data"][0]),
            B,
            N,
            batch.dtype,
            float(M),
            lib.stream(arrays[0]),
        )
        if not return_stats:
            return out
        named = {name: stats[i] for i, name in enumerate(STAT_NAMES)}
        if t_dev is None:
            named["mode_seeking"] = lib.to_device(np.full(B, t_scalar <= M))
        elif lib_name == "cupy":
            named["mode_seeking"] = t_dev <= M
        else:  # Numba arrays have no elementwise operators: compare on the host copy
            named["mode_seeking"] = lib.to_device(t_dev.copy_to_host() <= M)
    return out, named


def _cai_float64_vector(t, B, lib, lib_name):
    cai = t.__cuda_array_interface__
    shape = tuple(cai["shape"])
    if shape not in ((), (B,)):
        raise ValueError(f"t: expected a scalar or a vector of length B={B}, got shape {list(shape)}")
    kind = np.dtype(cai["typestr"]).kind
    if kind not in "biuf":
        raise TypeError(f"t: expected real timesteps, got dtype {np.dtype(cai['typestr'])}")
    if lib_name == "cupy":
        return lib.xp.ascontiguousarray(lib.xp.broadcast_to(t.astype(lib.xp.float64), (B,)))
    if shape == (B,) and np.dtype(cai["typestr"]) == np.float64 and cai.get("strides") in (None, (8,)):
        return t
    raise ValueError("t: expected a contiguous float64 Numba device vector of length B (or host timesteps)")
