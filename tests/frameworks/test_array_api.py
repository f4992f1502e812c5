"""Array-API libraries (array-api-strict, dask) and bare __dlpack__ producers."""

import numpy as np
import pytest

import ssd_toolkit
from conftest import M, T, reference
from tolerances import assert_close_to_reference


def test_array_api_strict_keeps_its_type(inputs):
    xp = pytest.importorskip("array_api_strict")
    arrays = [xp.asarray(x.astype(np.float64)) for x in inputs]
    E, stats = ssd_toolkit.estimate(*arrays, xp.asarray(T), M, return_stats=True)
    E_ref, stats_ref = reference(*inputs)
    assert type(E) is type(arrays[0]) and E.dtype == xp.float64
    assert_close_to_reference(np.from_dlpack(E), E_ref, "float64")
    np.testing.assert_allclose(np.from_dlpack(stats["scale"]), stats_ref["scale"], rtol=1e-10)
    assert np.from_dlpack(stats["mode_seeking"]).tolist() == (T <= M).tolist()
    E32 = ssd_toolkit.estimate(*(xp.astype(a, xp.float32) for a in arrays), 150, M)
    assert E32.dtype == xp.float32
    with pytest.raises(ValueError, match="backend: 'compiled' cannot run array_api arrays"):
        ssd_toolkit.estimate(*arrays, 1, M, backend="compiled")


def test_dask_is_correct_when_chunks_split_a_sample(inputs):
    da = pytest.importorskip("dask.array")
    pytest.importorskip("array_api_compat")
    arrays = [da.from_array(x.astype(np.float64), chunks=(3, 2, 5, 4)) for x in inputs]  # every sample split
    E, stats = ssd_toolkit.estimate(*arrays, T, M, return_stats=True)
    assert type(E) is da.Array  # still lazy
    E_ref, stats_ref = reference(*inputs)
    assert_close_to_reference(np.asarray(E), E_ref, "float64")
    np.testing.assert_allclose(np.asarray(stats["r"]), stats_ref["r"], rtol=1e-10)


def test_dlpack_only_objects_compute_as_numpy(inputs):
    class Producer:
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kwargs):
            return self.a.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self.a.__dlpack_device__()

    E = ssd_toolkit.estimate(*(Producer(x) for x in inputs), T, M)
    assert type(E) is np.ndarray
    assert_close_to_reference(E, reference(*inputs)[0], "float32")


def test_unknown_dimensions_are_refused_in_one_line():
    """A dask array after boolean indexing has nan sizes: refused naming the argument, not an
    internal 'expected shape [nan, 4, 5] ... got [nan, 4, 5]' or a NaN-to-integer error."""
    da = pytest.importorskip("dask.array")
    x = da.ones((4, 4, 5), chunks=2)
    y = x[x[:, 0, 0] > 0]
    with pytest.raises(ValueError, match=r"eps_cond: expected a shape of known sizes, got \[\?, 4, 5\].*compute_chunk_sizes"):
        ssd_toolkit.estimate(y, y, y, 1, 2)
