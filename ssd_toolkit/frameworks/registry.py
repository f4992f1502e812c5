"""Which backend an array belongs to, found from its type and cached per type.

Detection looks only at libraries already imported (``sys.modules``), so
``import ssd_toolkit`` imports no framework and a NumPy user never pays for torch or JAX.
The order matters where a type would match several backends: a library's own backend
before the generic CUDA-array-interface, array-API and DLPack ones.
"""

from __future__ import annotations

import importlib

_BY_TYPE = {}  # type -> backend instance, or a Refused backend that raises a clear TypeError

# (module that must be imported for the backend to apply, backend module, class) in order.
_DETECTORS = (
    (None, "refused", "Refused"),
    ("numpy", "numpy_arrays", "NumpyArrays"),
    ("torch", "torch_tensors", "TorchTensors"),
    ("jax", "jax_arrays", "JaxArrays"),
    (None, "cuda_arrays", "CudaArrays"),
    (None, "array_api", "ArrayApi"),
    (None, "dlpack", "DLPackOnly"),
)
_instances = {}


def _backend(module_name, class_name):
    key = (module_name, class_name)
    if key not in _instances:
        module = importlib.import_module(f"{__package__}.{module_name}")
        _instances[key] = getattr(module, class_name)()
    return _instances[key]


def find(x):
    """The backend of ``x``, or None when no backend takes its type (never raises)."""
    kind = type(x)
    backend = _BY_TYPE.get(kind)
    if backend is None:
        backend = _detect(kind)
        if backend is None:
            return None
        _BY_TYPE[kind] = backend
    return None if backend.refuses else backend


def is_refused(x) -> bool:
    """True for array types refused with a message of their own (``refused.py``)."""
    backend = _BY_TYPE.get(type(x)) or _detect(type(x))
    return backend is not None and backend.refuses


def framework_of(x, name="eps_cond"):
    """The backend of ``x``.

    Raises:
        TypeError: ``x`` is of a type no backend takes, or one that is refused (masked
            arrays, ``np.matrix``, TensorFlow tensors, ...), with what to pass instead.
    """
    kind = type(x)
    backend = _BY_TYPE.get(kind)
    if backend is None:
        backend = _detect(kind)
        if backend is None:
            raise TypeError(
                f"{name}: expected a numpy.ndarray, a torch.Tensor, a jax.Array, a __cuda_array_interface__ "
                f"array or an array-API array, got {kind.__module__}.{kind.__qualname__}"
            )
        _BY_TYPE[kind] = backend
    if backend.refuses:
        backend.refuse(x, name)
    return backend


def _detect(kind):
    import sys  # noqa: PLC0415

    for required, module_name, class_name in _DETECTORS:
        if required is not None and required not in sys.modules:
            continue
        backend = _backend(module_name, class_name)
        if backend.claims(kind):
            return backend
    return None
