"""The sweep runs every configuration in one loop: the same numbers as one ``distill`` run each."""

import itertools
import warnings

import numpy as np
import pytest

from ssd_toolkit import get_estimator, stable_diffusion_schedule
from ssd_toolkit.toy.estimator_sets import PerRowThreshold, ssd_label, ssd_sweep_estimators
from ssd_toolkit.toy.mixture import paper_mixture
from ssd_toolkit.toy.optimize import distill, make_sampler
from ssd_toolkit.toy.sweep import sweep


def test_sweep_in_one_loop_equals_one_run_per_configuration():
    Ms, lrs, steps_list, seeds, seed = (0, 150, 500), (0.05, 0.2), (30, 90), 3, 4
    rows = sweep(Ms, lrs, steps_list, seeds, seed, progress=False)
    mixture, cond_mask = paper_mixture()
    got = {(r["lr"], r["steps"], r["anneal"], r["M"], r["scaled"]): r["end_mean"] for r in rows}
    assert len(got) == len(rows) == len(lrs) * len(steps_list) * 2 * len(Ms) * 2
    for lr, steps, anneal in itertools.product(lrs, steps_list, (False, True)):
        res = distill(mixture, cond_mask, ssd_sweep_estimators(Ms), np.zeros((seeds, 2)),
                      schedule=stable_diffusion_schedule(), steps=steps, lr=lr,
                      sampler=make_sampler(steps, anneal=anneal, seed=seed), seed=seed, record_every=steps)  # fmt: skip
        for M, scaled in itertools.product(Ms, (True, False)):
            want = res.theta[res.names.index(ssd_label(M, scaled))].mean(0)
            np.testing.assert_array_equal(got[lr, steps, anneal, M, scaled], want)


@pytest.mark.parametrize("name", ["ssd", "ssd-no-rescale"])
def test_per_row_threshold_equals_the_estimator_at_each_threshold(name):
    rng = np.random.default_rng(0)
    c, u, n = rng.standard_normal((3, 12, 5))
    t = rng.integers(0, 1000, 12)
    Ms = np.array([0, 0.5, 199.5, 200, 333.25, 999] * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no timestep-convention warning from the per-row form
        got = PerRowThreshold(get_estimator(name, M=0), Ms)(c, u, n, t)
    for b, M in enumerate(Ms):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the reference at M = 0.5 is warned about as a step-fraction M
            want = get_estimator(name, M=M)(c, u, n, t)[b]
        np.testing.assert_array_equal(got[b], want)
    with pytest.raises(ValueError, match="M=0"):
        PerRowThreshold(get_estimator(name, M=200), Ms)
