"""Any other array-API library (array-api-strict, dask through array-api-compat, ...).

The estimator runs as the shared maths (``_ssd_math``) in the array's own namespace, in
float64, so the result keeps the caller's type, device and laziness (a dask array stays a
dask graph; chunks that split a sample are reduced correctly, as any ``sum`` is).
array-api-compat (optional) supplies namespaces for libraries without
``__array_namespace__`` (dask) and a portable ``device``.
"""

from __future__ import annotations

import importlib

import numpy as np

from ..engine import dispatch as _dispatch
from ..engine.array_ops import ArrayApiOps
from ..engine.maths import estimate_rows
from .base import ArrayBackend
from .batch import STAT_NAMES, stats_dict


def _compat():
    try:
        return importlib.import_module("array_api_compat")
    except ImportError:
        return None


class ArrayApi(ArrayBackend):
    name = "array_api"

    def __init__(self):
        self._ops = {}

    def claims(self, kind):
        if hasattr(kind, "__array_namespace__"):
            return True
        compat = _compat()
        return compat is not None and kind.__module__.split(".")[0] == "dask" and hasattr(kind, "dtype")

    def checked(self, x, name):
        """Refuses unknown dimensions (a dask array after boolean indexing: nan; the standard's
        None) in one line, before any shape comparison or size product meets them."""
        if any(d is None or d != d for d in x.shape):
            shown = ", ".join("?" if d is None or d != d else str(d) for d in x.shape)
            raise ValueError(f"{name}: expected a shape of known sizes, got [{shown}]; compute the unknown sizes "
                             "first (dask: x.compute_chunk_sizes())")
        return x

    def namespace(self, x):
        compat = _compat()
        return compat.array_namespace(x) if compat is not None else x.__array_namespace__()

    def ops_for(self, x):
        xp = self.namespace(x)
        ops = self._ops.get(xp)
        if ops is None:
            ops = self._ops[xp] = ArrayApiOps(xp)
        return ops

    def dtype_name(self, x):
        return str(x.dtype).rsplit(".", 1)[-1]

    def device(self, x):
        compat = _compat()
        return str(compat.device(x) if compat is not None else x.device)

    def host_timesteps(self, batch):
        return True

    def run(self, batch, backend, return_stats):
        _dispatch.check_backend(backend)
        if backend in ("torch", "compiled"):
            raise ValueError(
                f"backend: {backend!r} cannot run {self.name} arrays ({type(batch.eps_cond).__module__}); "
                "use backend='auto' (the array-API maths in float64)"
            )
        xp = self.namespace(batch.eps_cond)
        rows = [xp.astype(xp.reshape(a, (batch.B, batch.N)), xp.float64) for a in batch.arrays]
        seeking = self.from_host(batch.t64 <= batch.M, batch.eps_cond)
        E, named = estimate_rows(self.ops_for(batch.eps_cond), *rows, seeking)
        E = xp.reshape(xp.astype(E, batch.eps_cond.dtype), batch.shape)
        if not return_stats:
            return E
        return E, stats_dict(xp.stack([named[s] for s in STAT_NAMES]), seeking)

    def flat_rows(self, x, B, N):
        return self.namespace(x).reshape(x, (B, N))

    def astype(self, x, dtype):
        xp = self.namespace(x)
        return xp.astype(x, getattr(xp, dtype))

    def reshape(self, x, shape):
        return self.namespace(x).reshape(x, shape)

    def to_host_float64(self, x):
        try:
            host = np.from_dlpack(x)
        except (TypeError, AttributeError, BufferError, RuntimeError):
            host = np.asarray(x)  # dask: computes the graph
        return np.asarray(host, dtype=np.float64)

    def from_host(self, values, like, dtype=None):
        xp = self.namespace(like)
        compat = _compat()
        device = compat.device(like) if compat is not None else like.device
        out = xp.asarray(values, device=device)
        return out if dtype is None else xp.astype(out, getattr(xp, dtype))
