"""The array backends in detection order, installed into ``registry.DETECTORS`` by the package.

The order matters where a type would match several backends: a library's own backend before
the generic CUDA-array-interface, array-API and DLPack ones. The torch backend is a function:
its package imports torch, so it is imported only once torch is (the registry looks at
``sys.modules`` first).
"""

from __future__ import annotations

from . import array_api, cuda_arrays, dlpack, jax_arrays, numpy_arrays, refused


def torch_tensors():
    """The torch backend's class (imports torch: called only once torch is imported). A plain
    import statement: Dynamo runs it natively on a first call inside ``torch.compile``."""
    from .torch.backend import TorchTensors  # noqa: PLC0415

    return TorchTensors


DETECTORS = (
    (None, refused.Refused),
    ("numpy", numpy_arrays.NumpyArrays),
    ("torch", torch_tensors),
    ("jax", jax_arrays.JaxArrays),
    (None, cuda_arrays.CudaArrays),
    (None, array_api.ArrayApi),
    (None, dlpack.DLPackOnly),
)
