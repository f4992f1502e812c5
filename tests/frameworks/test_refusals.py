"""Array types that would be silently wrong are refused with one line saying what to pass."""

import numpy as np
import pytest

import ssd_toolkit
from conftest import M, T


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_numpy_refusals_name_what_to_pass(inputs):
    c, u, n = inputs
    with pytest.raises(TypeError, match=r"eps_cond: expected a plain array, got a numpy.ma.MaskedArray .* x.filled"):
        ssd_toolkit.estimate(np.ma.masked_array(c, mask=c > 2), u, n, T, M)
    with pytest.raises(TypeError, match=r"noise: expected a numpy.ndarray, got a numpy.matrix"):
        ssd_toolkit.estimate(c[:, 0, 0], u[:, 0, 0], np.asmatrix(n[:, 0, 0]), T, M)
    with pytest.raises(TypeError, match=r"eps_cond: expected a floating dtype .* got object"):
        ssd_toolkit.estimate(c.astype(object), u, n, T, M)
    with pytest.raises(TypeError, match=r"t: expected a plain array, got a numpy.ma.MaskedArray"):
        ssd_toolkit.estimate(c, u, n, np.ma.masked_array(T), M)


def test_tensorflow_tensors_name_numpy_and_numpy_function(inputs):
    Tensor = type("EagerTensor", (), {"__module__": "tensorflow.python.framework.ops", "shape": (4,), "dtype": "float32"})
    with pytest.raises(TypeError, match=r"eps_cond: expected .* got tensorflow.python.framework.ops.EagerTensor; "
                                        r"pass x.numpy\(\) eagerly, or call it inside tf.numpy_function"):
        ssd_toolkit.estimate(Tensor(), *inputs[1:], T, M)
