"""``__cuda_array_interface__`` producers (CuPy, Numba) -> one fused CUDA kernel launch.

Arrays are passed to the kernel as raw device addresses; the output (and the stats) are
allocated by the caller's own library on the inputs' device, and the launch goes on that
library's current stream. Nothing here synchronises the device or copies data to the host.
"""

from __future__ import annotations

import numpy as np

from ..engine import dispatch as _dispatch
from ..engine import extension as _extension
from .base import ArrayBackend
from .batch import ARRAY_ARGS, STAT_NAMES, stats_dict
from .timestep_checks import check_kind, check_shape, host_timesteps


class CudaArrays(ArrayBackend):
    name = "cuda_array_interface"

    def claims(self, kind):
        return hasattr(kind, "__cuda_array_interface__")

    def dtype_name(self, x):
        return np.dtype(x.__cuda_array_interface__["typestr"]).name

    def device(self, x):
        return "cuda"

    def run(self, batch, backend, return_stats):
        _dispatch.check_backend(backend)
        if backend in ("reference", "torch"):
            raise ValueError(
                f"backend: {backend!r} cannot read __cuda_array_interface__ arrays (device memory); "
                "use backend='auto' with a CUDA build"
            )
        _dispatch.kernel_or_fallback(backend, "cuda", None)  # CuPy/Numba have no fallback here
        return estimate_cai(batch, batch.t, batch.M, return_stats)


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


def estimate_cai(batch, t, M, return_stats):
    module = _extension.load()
    arrays = (batch.eps_cond, batch.eps_uncond, batch.noise)
    lib_name = _producer(batch.eps_cond)
    if lib_name not in ("cupy", "numba"):
        raise TypeError(
            f"eps_cond: __cuda_array_interface__ arrays from {lib_name!r} are not supported (the output must be "
            "allocated by the caller's library); pass CuPy arrays (cupy.asarray(x) wraps them without a copy), "
            "Numba device arrays or torch tensors"
        )
    ptrs = [int(x.__cuda_array_interface__["data"][0]) for x in arrays]
    devices = [module.cuda_pointer_device(p) if p else -1 for p in ptrs]
    if len({d for d in devices if d >= 0}) > 1:
        raise ValueError(
            "eps_cond, eps_uncond, noise: expected arrays on one CUDA device, got devices "
            + ", ".join(f"{n}=cuda:{d}" for n, d in zip(ARRAY_ARGS, devices))
        )
    device_id = next((d for d in devices if d >= 0), module.cuda_current_device())
    lib = _CupyLib(device_id) if lib_name == "cupy" else _NumbaLib(device_id)
    B, N = batch.B, batch.N
    dtype = np.dtype(batch.dtype)
    with lib.device:  # copies of non-contiguous inputs are made on the inputs' own device
        arrays = [_cai_contiguous(x, lib_name) for x in arrays]
        ptrs = [int(x.__cuda_array_interface__["data"][0]) for x in arrays]
        t_vec = lib.device_vector(t)
        if t_vec is not None:
            t_dev = _cai_float64_vector(t_vec, B, lib, lib_name)
            t_scalar = 0.0
        elif (len(t.shape) if hasattr(t, "shape") else np.ndim(t)) == 0:
            t_dev, t_scalar = None, float(host_timesteps(t, 1)[0])
        else:
            t_dev, t_scalar = lib.to_device(host_timesteps(t, B)), 0.0
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
        if t_dev is None:
            seeking = lib.to_device(np.full(B, t_scalar <= M))
        elif lib_name == "cupy":
            seeking = t_dev <= M
        else:  # Numba arrays have no elementwise operators: compare on the host copy
            seeking = lib.to_device(t_dev.copy_to_host() <= M)
    return out, stats_dict(stats, seeking)


def _cai_float64_vector(t, B, lib, lib_name):
    cai = t.__cuda_array_interface__
    shape = tuple(cai["shape"])
    check_shape(shape, B)
    check_kind(np.dtype(cai["typestr"]).name)
    if lib_name == "cupy":
        return lib.xp.ascontiguousarray(lib.xp.broadcast_to(t.astype(lib.xp.float64), (B,)))
    if shape == (B,) and np.dtype(cai["typestr"]) == np.float64 and cai.get("strides") in (None, (8,)):
        return t
    raise ValueError("t: expected a contiguous float64 Numba device vector of length B (or host timesteps)")
