"""w(t): formulas, aliases, library/dtype/device of the result, errors."""

import numpy as np
import pytest

from ssd_toolkit import get_weighting, list_weightings, stable_diffusion_schedule

ABAR = stable_diffusion_schedule().alphas_cumprod
T_SAMPLES = np.array([0, 20, 137, 500, 980, 999], dtype=np.int64)

FORMULAS = {
    "sds": lambda a: 1.0 - a,
    "dreamfusion": lambda a: 1.0 - a,
    "fantasia3d": lambda a: np.sqrt(a) * (1.0 - a),
    "latent-nerf": lambda a: np.sqrt(a) * (1.0 - a),
    "uniform": lambda a: np.ones_like(a),
    "sjc": lambda a: np.ones_like(a),
    "ism": lambda a: np.sqrt((1.0 - a) / a),  # LucidDreamer's sqrt((1 - abar) / abar)
}


def test_names_listed():
    assert set(list_weightings()) == set(FORMULAS)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_numpy_matches_formula(name):
    w = get_weighting(name)(T_SAMPLES, ABAR)
    assert isinstance(w, np.ndarray) and w.dtype == np.float64 and w.shape == (6,)
    np.testing.assert_allclose(w, FORMULAS[name](ABAR[T_SAMPLES]), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sds", "fantasia3d", "uniform"])
def test_torch_matches_numpy_in_alphas_dtype(name):
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(T_SAMPLES)
    w32 = get_weighting(name)(t, torch.from_numpy(ABAR).float())
    assert isinstance(w32, torch.Tensor) and w32.dtype == torch.float32 and w32.device == t.device
    np.testing.assert_allclose(w32.numpy(), FORMULAS[name](ABAR[T_SAMPLES]), rtol=1e-6, atol=1e-7)
    w64 = get_weighting(name)(t, ABAR)  # NumPy alphas with torch t: float64 tensor
    assert isinstance(w64, torch.Tensor) and w64.dtype == torch.float64
    np.testing.assert_allclose(w64.numpy(), FORMULAS[name](ABAR[T_SAMPLES]), rtol=0, atol=0)


def test_numpy_t_with_torch_alphas_gives_numpy():
    torch = pytest.importorskip("torch")
    w = get_weighting("sds")(T_SAMPLES, torch.from_numpy(ABAR))
    assert isinstance(w, np.ndarray) and w.dtype == np.float64


def test_alias_spelling_and_unknown_name():
    assert get_weighting("Latent_NeRF").name == "fantasia3d"
    with pytest.raises(ValueError, match=r"name: expected one of .*'sds'.*got 'sjc-v2'"):
        get_weighting("sjc-v2")


@pytest.mark.parametrize(
    ("t", "exc", "pattern"),
    [
        (np.array([0, 1000]), ValueError, r"t: expected timesteps in \[0, 999\].*max 1000"),
        (np.array([-1]), ValueError, r"t: expected timesteps in \[0, 999\].*min -1"),
        (np.array([1.5]), ValueError, r"t: expected integer-valued timesteps, got 1.5"),
        (np.array(["a"]), TypeError, r"t: expected integer timesteps"),
    ],
)
def test_bad_timesteps(t, exc, pattern):
    with pytest.raises(exc, match=pattern):
        get_weighting("sds")(t, ABAR)


def test_bad_alphas():
    with pytest.raises(ValueError, match=r"alphas_cumprod: expected shape \[T\]"):
        get_weighting("sds")(T_SAMPLES, ABAR[None])
    with pytest.raises(TypeError, match="alphas_cumprod: expected a NumPy array or torch tensor"):
        get_weighting("sds")(T_SAMPLES, 0.5)
