"""Scalar argument checks shared by the core, the integrations and the CLIs.

Every error has the project's one form, ``<name>: expected <what>, got <value>``. Arrays
are validated elsewhere (``ssd_toolkit.frameworks``); these take Python or NumPy scalars
(and 0-d arrays or tensors where ``real`` says so).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["cfg_scale", "did_you_mean", "integer", "lookup", "real", "threshold"]


def did_you_mean(given, choices) -> str:
    """``" (did you mean 'x'?)"`` for the choice closest to ``given`` (case-insensitive, so
    'm' finds 'M'), or ``""`` when none is close: the one suggestion every message appends."""
    import difflib  # noqa: PLC0415

    by_lower = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(given).lower(), list(by_lower), n=1)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def real(name, value, *, positive=False, finite=True, array_0d=False, noun="number") -> float:
    """``value`` as a Python float, checked to be a real number (not a bool).

    Args:
        positive: also require ``value > 0``.
        finite: also require a finite value (default).
        array_0d: also take a real 0-d NumPy array or tensor (read with ``.item()``).
        noun: what the message calls the value ("number", "scalar").

    Raises:
        TypeError: not a real number (bools and complex numbers included).
        ValueError: non-finite (with ``finite``), not > 0 (with ``positive``), or an
            integer beyond float64's range.
    """
    what = f"a finite {noun} > 0" if positive else f"a finite real {noun}" if finite else f"a real {noun}"
    if array_0d and getattr(value, "ndim", None) == 0 and hasattr(value, "item") and not isinstance(value, numbers.Number):
        item = value.item()
        if isinstance(item, numbers.Real) and not isinstance(item, bool):
            value = item
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected {what}, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:  # a Python int beyond float64's range
        raise ValueError(f"{name}: expected {what}, got an integer of {len(str(abs(value)))} digits") from None
    if finite and not math.isfinite(number):
        raise ValueError(f"{name}: expected {what}, got {number}")
    if positive and not number > 0:
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return number


def integer(name, value, minimum=None) -> int:
    """``value`` as a Python int, checked to be an integer (not a bool), ``>= minimum``."""
    what = "an integer" if minimum is None else f"an integer >= {minimum}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected {what}, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected {what}, got {value}")
    return int(value)


def lookup(table: dict, name):
    """``table[name]`` after normalising case and ``_``/``-``: the one name look-up of the
    estimator, weighting and timestep-sampler registries.

    Raises:
        ValueError: unknown name; the message lists the known ones (and the closest).
    """
    key = str(name).lower().replace("_", "-")
    if key not in table:
        raise ValueError(f"name: expected one of {sorted(table)}, got {name!r}{did_you_mean(key, table)}")
    return table[key]


def threshold(M) -> float:
    """The SSD threshold ``M`` as a float: a finite real scalar (a 0-d array too); the one
    check of ``M`` for ``estimate``, the SSD estimators and every backend."""
    return real("M", M, array_0d=True, noun="scalar")


def cfg_scale(name, value) -> float:
    """A classifier-free-guidance scale: finite and >= 0 (a negative scale pushes away from the
    prompt, which no estimator here intends)."""
    scale = real(name, value)
    if scale < 0:
        raise ValueError(f"{name}: expected a finite number >= 0 (a classifier-free-guidance scale), got {value!r}")
    return scale
