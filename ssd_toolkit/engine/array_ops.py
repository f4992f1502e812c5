"""The handful of array operations ``engine.maths`` needs, per library (passed down as ``xp``).

Everything else in the maths is operators and ``[:, None]`` indexing, which every
supported library has. ``where`` takes Python scalars for either branch (the array-API
standard's ``where`` did not before 2024.12).
"""

from __future__ import annotations

import contextlib

import numpy as np


class NumpyOps:
    lib = np
    where = staticmethod(np.where)
    sqrt = staticmethod(np.sqrt)
    isfinite = staticmethod(np.isfinite)
    full_like = staticmethod(np.full_like)

    @staticmethod
    def row_sum(x):
        return x.sum(1)

    @staticmethod
    def errstate():
        return np.errstate(all="ignore")


class ModuleOps:
    """A NumPy-like module (torch, jax.numpy): the same names, no floating-point warnings."""

    errstate = staticmethod(contextlib.nullcontext)

    def __init__(self, lib):
        self.lib = lib
        self.where = lib.where
        self.sqrt = lib.sqrt
        self.isfinite = lib.isfinite
        self.full_like = lib.full_like

    @staticmethod
    def row_sum(x):
        return x.sum(1)


class ArrayApiOps:
    """Any array-API namespace ``xp`` (array-api-strict, dask through array-api-compat)."""

    errstate = staticmethod(contextlib.nullcontext)

    def __init__(self, xp):
        self.lib = xp
        self.sqrt = xp.sqrt
        self.isfinite = xp.isfinite
        self.full_like = xp.full_like

    def where(self, condition, a, b):
        xp = self.lib
        like = b if not isinstance(b, (int, float, bool)) else a
        if isinstance(a, (int, float, bool)):
            a = xp.full_like(like, a) if not isinstance(like, (int, float, bool)) else xp.asarray(a)
        if isinstance(b, (int, float, bool)):
            b = xp.full_like(a, b)
        return xp.where(condition, a, b)

    def row_sum(self, x):
        return self.lib.sum(x, axis=1)

NUMPY_OPS = NumpyOps()  # the one instance: stateless
