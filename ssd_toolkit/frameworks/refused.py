"""Array types that look like arrays but would be silently wrong or cannot be read here.

A masked array's masked values would enter the norms and the mask would be lost; an
``np.matrix`` keeps two dimensions through every operation; TensorFlow tensors have no
zero-copy route here. Each gets one TypeError naming what to pass instead.
"""

from __future__ import annotations

import numpy as np


class Refused:
    name = "refused"
    refuses = True

    def claims(self, kind) -> bool:
        return _reason(kind) is not None

    def refuse(self, x, name):
        raise TypeError(f"{name}: {_reason(type(x))}")


def _reason(kind):
    if issubclass(kind, np.ma.MaskedArray):
        return (
            "expected a plain array, got a numpy.ma.MaskedArray (its masked values would enter the norms); "
            "pass x.filled(0.0) or np.asarray(x) after choosing what the masked entries mean"
        )
    if issubclass(kind, np.matrix):
        return "expected a numpy.ndarray, got a numpy.matrix (it has no batch dimension semantics); pass np.asarray(x)"
    module = kind.__module__.split(".")[0]
    if module == "tensorflow" or module == "keras":
        return (
            f"expected a NumPy, torch, JAX or array-API array, got {kind.__module__}.{kind.__qualname__}; "
            "pass x.numpy() eagerly, or call it inside tf.numpy_function"
        )
    return None
