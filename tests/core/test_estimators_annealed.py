"""Annealed CSD (DreamWaltz-G's trainer) and SDS-Bridge: their step schedules against the
formulas written out here, per training step."""

import numpy as np
import pytest

from ssd_toolkit import get_estimator
from ssd_toolkit.estimators import SDS_BRIDGE_SOURCE_MODIFIER, at_step
from ssd_inputs import make_inputs

SHAPE = (3, 4, 5, 5)
T = np.array([10, 400, 900])


def inputs(seed=0):
    return make_inputs(SHAPE, "float64", seed=seed, count=4)  # cond, uncond, noise, negative


def csd_reference(c, u, neg, train_step, max_iteration):
    """DreamWaltz-G (core/guidance/basic.py, csd): null weight -p/2, negative weight -1 + p/2."""
    p = train_step / max_iteration
    return c + (-0.5 * p) * u + (-1.0 + 0.5 * p) * neg


@pytest.mark.parametrize(("step", "total"), [(0, 100), (1, 100), (37, 100), (100, 100), (7000, 10000)])
def test_annealed_csd_follows_the_schedule(step, total):
    c, u, n, neg = inputs()
    E = at_step(get_estimator("csd-annealed"), step, total)(c, u, n, T, eps_negative=neg)
    np.testing.assert_allclose(E, csd_reference(c, u, neg, step, total), rtol=1e-13, atol=1e-13)


def test_annealed_csd_end_points():
    c, u, n, neg = inputs()
    est = get_estimator("csd-annealed")
    # start: c - neg (the negative prompt alone); end: c - (u + neg) / 2
    np.testing.assert_allclose(at_step(est, 0, 50)(c, u, n, T, eps_negative=neg), c - neg, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(at_step(est, 50, 50)(c, u, n, T, eps_negative=neg), c - 0.5 * (u + neg), rtol=1e-14, atol=1e-14)
    # without a step: DreamWaltz-G's fallback c - u, the plain CSD direction
    np.testing.assert_allclose(at_step(est, 3, None)(c, u, n, T, eps_negative=neg), c - u, rtol=0, atol=0)
    np.testing.assert_allclose(est(c, u, n, T, eps_negative=neg), get_estimator("csd")(c, u, n, T), rtol=0, atol=0)


def test_sds_bridge_stages():
    c, u, n, src = inputs()
    est = get_estimator("sds-bridge", guidance_scale=7.5, scale=3.0, stage_two_start_step=100)
    one, two = at_step(est, 99), at_step(est, 100)
    assert one.branches == ("cond", "uncond") and two.branches == ("cond", "negative")
    np.testing.assert_allclose(one(c, u, n, T), u + 7.5 * (c - u) - n, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(two(c, None, n, T, eps_negative=src), 3.0 * (c - src), rtol=1e-13, atol=1e-13)
    # stage 1 is SDS (standard CFG) exactly
    np.testing.assert_allclose(one(c, u, n, T), get_estimator("sds", guidance_scale=7.5)(c, u, n, T), rtol=0, atol=0)


def test_sds_bridge_defaults_are_the_authors():
    est = get_estimator("sds-bridge")
    assert (est.guidance_scale, est.scale, est.stage_two_start_step, est.stage) == (100.0, 1.0, 20000, 2)
    assert SDS_BRIDGE_SOURCE_MODIFIER.startswith("oversaturated, smooth, pixelated")


@pytest.mark.parametrize(
    ("make", "exc", "pattern"),
    [
        (lambda: get_estimator("csd-annealed", progress="0.5"), TypeError, r"progress: expected a finite real number, got str"),
        (lambda: at_step(get_estimator("csd-annealed"), 3, 0), ValueError, r"max_iteration: expected a finite number > 0, got 0"),
        (lambda: get_estimator("sds-bridge", stage=3), ValueError, r"stage: expected 1 or 2, got 3"),
        (lambda: at_step(get_estimator("sds-bridge"), None), TypeError, r"train_step: expected a finite real number, got NoneType"),
    ],
)
def test_errors(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_missing_source_branch_is_named():
    c, u, n, _ = inputs()
    with pytest.raises(ValueError, match=r"eps_negative: expected"):
        get_estimator("sds-bridge")(c, u, n, T)
