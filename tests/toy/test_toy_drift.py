"""``toy drift``: the expected update along the ray through [2, 1], against a direct NumPy
computation of h, r and the rescaled pull (Algorithm 1's formulas), and the zero crossing."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ssd_toolkit.toy.drift import MODE, drift_along_ray, net_drift, settles
from ssd_toolkit.toy.mixture import paper_mixture

from ssd_toolkit import stable_diffusion_schedule


def test_push_and_pull_match_the_formulas():
    ts, lambdas, noises, seed = np.array([20, 150, 400, 900]), np.array([0.8, 1.0, 1.3]), 6, 3
    d = drift_along_ray(M=200.0, noises=noises, seed=seed, ts=ts, lambdas=lambdas)
    mixture, cond = paper_mixture()
    schedule = stable_diffusion_schedule()
    ray = np.asarray(MODE) / np.linalg.norm(MODE)
    half = np.random.default_rng(seed).standard_normal((noises // 2, 2))
    noise = np.concatenate([half, -half])
    for i, t in enumerate(ts):
        a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
        for k, lam in enumerate(lambdas):
            x_t = a * lam * np.asarray(MODE) + s * noise
            c = -s * mixture.score(x_t, a, s, cond)
            u = -s * mixture.score(x_t, a, s)
            h = c - u
            r = np.sum(c * noise, 1) / np.sum(noise * noise, 1)
            tilde = c - r[:, None] * noise
            scaled = (np.linalg.norm(h, axis=1) / np.linalg.norm(tilde, axis=1))[:, None] * tilde
            np.testing.assert_allclose(d["push"][i, k], -np.mean(h @ ray), rtol=1e-9, atol=1e-300)
            # rtol 1e-6: the package takes ||eps_tilde||^2 from expanded sums (cc - 2 r cn + r^2 nn),
            # which loses digits where eps_tilde << eps_cond; measured up to 1.2e-7 here
            np.testing.assert_allclose(d["pull"][i, k], -np.mean(scaled @ ray), rtol=1e-6, atol=1e-300)
            np.testing.assert_allclose(d["pull_unscaled"][i, k], -np.mean(tilde @ ray), rtol=1e-9)
            np.testing.assert_allclose(d["h_norm"][i, k], np.mean(np.linalg.norm(h, axis=1)), rtol=1e-9, atol=1e-300)


def test_algorithm_1_drifts_out_of_the_mode_and_the_ablation_settles_near_it():
    """The mechanism docs/toy.md states, on a coarse grid (measured with 128 noises and the
    default grid: push 0.074, pull -3.6e-4 and -0.018, the ablation settles at lam 1.13)."""
    ts, lambdas = np.arange(20, 981, 40), np.linspace(0.7, 1.5, 9)
    d = drift_along_ray(M=200.0, noises=32, seed=0, ts=ts, lambdas=lambdas)
    nets = net_drift(d, ts, 200.0)
    assert np.all(nets["SSD (Algorithm 1)"] > 0)  # outward everywhere: no stable point near the mode
    assert settles(lambdas, nets["SSD (Algorithm 1)"]) is None
    assert 1.0 < settles(lambdas, nets["SSD without line 15"]) < 1.3
    at = int(np.argmin(np.abs(lambdas - 1.0)))
    small = ts <= 200
    # the rescaled pull is at least 20x weaker than the unscaled one at the mode
    assert np.sum(d["pull"][small, at]) * 20 > np.sum(d["pull_unscaled"][small, at])
    assert np.sum(d["pull"][small, at]) < 0


@given(st.floats(0.1, 5.0), st.floats(-3.0, 3.0))
def test_settles_finds_the_downward_zero_of_a_line(slope, root):
    lam = np.linspace(-4.0, 4.0, 17)
    assert settles(lam, -slope * (lam - root)) == pytest.approx(root, abs=1e-9)
    assert settles(lam, slope * (lam - root)) is None  # an upward crossing is no stable point
