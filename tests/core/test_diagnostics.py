"""step_diagnostics: values from the per-sample stats, branch fractions, weights, errors."""

import math

import numpy as np
import pytest

from ssd_toolkit import estimate, get_estimator, stable_diffusion_schedule
from ssd_toolkit.diagnostics import step_diagnostics
from ssd_toolkit.weighting import get_weighting
from ssd_inputs import make_inputs

T = np.array([10, 150, 200, 600, 900, 999])


def inputs(seed=0, shape=(6, 4, 3, 3)):
    """float64 cond (correlated with the noise), uncond, noise."""
    return make_inputs(shape, "float64", seed=seed, cond_noise_mix=(0.5, 0.7))


def test_ssd_step_matches_direct_norms():
    c, u, n = inputs()
    c[1] = 2.0 * n[1]  # degenerate: eps_tilde = 0, E = 0
    E, stats = get_estimator("ssd", M=200)(c, u, n, T, return_stats=True)
    w = get_weighting("sds")(T, stable_diffusion_schedule().alphas_cumprod)
    d = step_diagnostics(stats, T, weights=w)
    norms = np.linalg.norm(E.reshape(6, -1), axis=1)
    np.testing.assert_allclose([d[f"grad_norm/{b}"] for b in range(6)], w * norms, rtol=1e-12, atol=1e-15)
    assert d["grad_norm"] == pytest.approx(np.mean(w * norms), rel=1e-12)
    assert d["grad_norm_unweighted"] == pytest.approx(norms.mean(), rel=1e-12)
    assert d["frac_mode_seeking"] == pytest.approx(3 / 6) and d["frac_mode_disengaging"] == pytest.approx(3 / 6)
    assert d["frac_degenerate"] == pytest.approx(1 / 6) and d["frac_nonfinite"] == 0.0
    assert (d["t_min"], d["t_mean"], d["t_max"]) == (10.0, pytest.approx(T.mean()), 999.0)
    r = np.einsum("bi,bi->b", c.reshape(6, -1), n.reshape(6, -1)) / np.einsum("bi,bi->b", n.reshape(6, -1), n.reshape(6, -1))
    assert d["r"] == pytest.approx(r.mean(), rel=1e-12)
    assert d["h_norm"] == pytest.approx(np.linalg.norm((c - u).reshape(6, -1), axis=1).mean(), rel=1e-12)
    assert d["eps_cond_norm"] == pytest.approx(np.linalg.norm(c.reshape(6, -1), axis=1).mean(), rel=1e-12)
    assert all(isinstance(v, float) for v in d.values())


def test_raw_estimate_stats_derive_grad_norm():
    c, u, n = inputs()
    c[0] = -n[0]
    E, stats = estimate(c, u, n, T, 200, return_stats=True, backend="reference")
    d = step_diagnostics(stats, T, per_sample=("grad_norm", "r"))
    np.testing.assert_allclose([d[f"grad_norm/{b}"] for b in range(6)], np.linalg.norm(E.reshape(6, -1), axis=1), rtol=1e-12, atol=1e-15)
    assert d["grad_norm/0"] == 0.0
    assert d["r/0"] == pytest.approx(-1.0)


def test_non_ssd_estimator_and_torch_stats():
    torch = pytest.importorskip("torch")
    c, u, n = (torch.from_numpy(a).float() for a in inputs())
    E, stats = get_estimator("sds", guidance_scale=7.5)(c, u, n, torch.from_numpy(T), return_stats=True)
    d = step_diagnostics(stats, torch.from_numpy(T), weights=2.0)
    np.testing.assert_allclose(d["grad_norm"], 2.0 * E.double().reshape(6, -1).norm(dim=1).mean().item(), rtol=1e-6)
    assert "frac_mode_seeking" not in d and "r" not in d
    assert d["t_max"] == 999.0


def test_nonfinite_and_empty_batch():
    d = step_diagnostics({"grad_norm": np.array([1.0, np.nan, np.inf, 2.0])}, 5)
    assert d["frac_nonfinite"] == 0.5 and math.isnan(d["grad_norm"]) and d["t_mean"] == 5.0
    empty = step_diagnostics({"grad_norm": np.zeros(0)}, np.zeros(0, dtype=np.int64))
    assert math.isnan(empty["grad_norm"]) and math.isnan(empty["t_min"]) and empty["frac_nonfinite"] == 0.0


def test_errors():
    with pytest.raises(TypeError, match="stats: expected a dict"):
        step_diagnostics([1.0], 0)
    with pytest.raises(ValueError, match=r"stats: expected 'grad_norm' or the SSD stats"):
        step_diagnostics({"r": np.zeros(3)}, 0)
    with pytest.raises(ValueError, match=r"missing \['mode_seeking', 'scale'\]"):
        step_diagnostics({"h_norm": np.zeros(3)}, 0)
    with pytest.raises(ValueError, match=r"t: expected a scalar or shape \[3\] .* got \[2\]"):
        step_diagnostics({"grad_norm": np.zeros(3)}, np.zeros(2))
    with pytest.raises(ValueError, match=r"weights: expected a scalar or shape \[3\]"):
        step_diagnostics({"grad_norm": np.zeros(3)}, 0, weights=np.ones(4))
    with pytest.raises(ValueError, match=r"per_sample: expected names among .* got 'eps_tilde_norm'"):
        step_diagnostics({"grad_norm": np.zeros(3)}, 0, per_sample=("eps_tilde_norm",))
