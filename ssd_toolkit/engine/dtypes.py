"""The float dtypes every backend takes, by name: the one table, and how mixed inputs promote."""

from __future__ import annotations

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")  # what estimate and the estimators take
HALF_DTYPES = ("float16", "bfloat16")  # computed in float32 by the estimators, rounded once
ITEM_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def promote(names) -> str:
    """The dtype three inputs of float dtypes ``names`` are computed in: the widest, and
    float32 for float16 with bfloat16 (neither holds the other), as NumPy, torch and JAX
    promote floats."""
    names = tuple(names)
    if all(n == names[0] for n in names):
        return names[0]
    widest = max(names, key=ITEM_BYTES.__getitem__)
    if ITEM_BYTES[widest] == 2:  # float16 with bfloat16
        return "float32"
    return widest


def compute_dtype(name: str) -> str:
    """float32 for half precision, the dtype itself otherwise."""
    return "float32" if name in HALF_DTYPES else name
