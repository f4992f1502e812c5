"""The float64 NumPy reference of the SSD estimator (Algorithm 1): the oracle every kernel is
tested against and the fallback when no compiled module is built.

The public name of ``ssd_toolkit.engine.reference``, where it lives (the lowest layer, beside
the maths it runs); its docstring states the semantics every backend shares.
"""

from .engine.reference import COLLINEAR_RTOL2, STAT_NAMES, estimate_reference

__all__ = ["COLLINEAR_RTOL2", "STAT_NAMES", "estimate_reference"]
