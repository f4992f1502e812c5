"""Which backend an array belongs to, found from its type and cached per type.

Detection looks only at libraries already imported (``sys.modules``), so
``import ssd_toolkit`` imports no framework and a NumPy user never pays for torch or JAX.
The order matters where a type would match several backends: a library's own backend
before the generic CUDA-array-interface, array-API and DLPack ones.
"""

from __future__ import annotations

_BY_TYPE = {}  # type -> backend instance, a Refused backend that raises a clear TypeError, or None (no backend takes it)


# The backends in detection order: (module that must be imported for the backend to apply,
# backend class or a function returning it). Installed by the package (frameworks/__init__.py
# from detectors.py), so this module imports no backend and the backends may import it.
DETECTORS = []

_instances = {}


def _backend(cls):
    if cls not in _instances:
        _instances[cls] = cls()
    return _instances[cls]


def _lookup(kind):
    """The cached backend of ``kind`` (None for types no backend takes; cached too, since
    detecting them is the slow part: lists, scalars and strings reach here as ``t``)."""
    try:
        return _BY_TYPE[kind]
    except KeyError:
        backend = _BY_TYPE[kind] = _detect(kind)
        return backend


def find(x):
    """The backend of ``x``, or None when no backend takes its type (never raises)."""
    backend = _lookup(type(x))
    return None if backend is None or backend.refuses else backend


def is_refused(x) -> bool:
    """True for array types refused with a message of their own (``refused.py``)."""
    backend = _lookup(type(x))
    return backend is not None and backend.refuses


def framework_of(x, name="eps_cond"):
    """The backend of ``x``.

    Raises:
        TypeError: ``x`` is of a type no backend takes, or one that is refused (masked
            arrays, ``np.matrix``, TensorFlow tensors, ...), with what to pass instead.
    """
    backend = _BY_TYPE.get(type(x))  # the hot path: one dict look-up
    if backend is None:
        backend = _lookup(type(x))
        if backend is None:
            kind = type(x)
            raise TypeError(
                f"{name}: expected a numpy.ndarray, a torch.Tensor, a jax.Array, a __cuda_array_interface__ "
                f"array or an array-API array, got {kind.__module__}.{kind.__qualname__}"
            )
    if backend.refuses:
        backend.refuse(x, name)
    return backend


def _detect(kind):
    import sys  # noqa: PLC0415

    for required, cls in DETECTORS:
        if required is not None and required not in sys.modules:
            continue
        backend = _backend(cls if isinstance(cls, type) else cls())
        if backend.claims(kind):
            return backend
    return None
