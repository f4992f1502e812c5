"""The shared input builder (tests/ssd_inputs.py): what tests and bench/ rely on."""

import numpy as np
import pytest

from optional_torch import requires_torch, torch
from ssd_inputs import make_inputs


def test_float64_standard_normal_draws_in_order_cond_uncond_noise():
    rng = np.random.default_rng(5)
    expected = [rng.standard_normal((2, 3, 4)) for _ in range(4)]
    got = make_inputs((2, 3, 4), "float64", seed=5, count=4)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_every_dtype_rounds_the_same_draws():
    ref = make_inputs((3, 7), "float64", seed=1)
    for dtype in ("float32", "float16"):
        for a, b in zip(make_inputs((3, 7), dtype, seed=1), ref):
            assert a.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(a, b.astype(dtype))


def test_cond_noise_mix_and_a_generator_seed():
    c, u, n = make_inputs((4, 5), "float64", seed=2)
    mixed = make_inputs((4, 5), "float64", seed=2, cond_noise_mix=(0.5, 0.7))
    np.testing.assert_array_equal(mixed[0], 0.5 * c + 0.7 * n)
    np.testing.assert_array_equal(mixed[2], n)
    rng = np.random.default_rng(2)
    first, second = make_inputs((4, 5), "float64", seed=rng), make_inputs((4, 5), "float64", seed=rng)
    np.testing.assert_array_equal(first[0], c)  # a Generator is drawn from, not reseeded
    assert not np.array_equal(second[0], c)


@requires_torch
def test_torch_holds_the_numpy_values():
    for dtype in ("float64", "float16", "bfloat16"):
        got = make_inputs((2, 6), dtype, "torch", seed=3)
        ref = make_inputs((2, 6), "float64", seed=3)
        for a, b in zip(got, ref):
            assert a.dtype == getattr(torch, dtype)
            torch.testing.assert_close(a, torch.from_numpy(b).to(a.dtype), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dtype="bfloat16"), "dtype: NumPy has no bfloat16"),
        (dict(library="jax"), "library: expected one of"),
        (dict(count=2), "count: expected >= 3"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_inputs((2, 3), **kwargs)
