"""The one rule every host uses for estimator arguments, and the grad_norm warning."""

import warnings

import pytest

from ssd_toolkit.integrations.guidance.estimator_choice import (
    canonical_name,
    estimator_params,
    warn_if_grad_norm_erases,
)


def test_host_values_reach_the_fields_an_estimator_has():
    assert estimator_params("ssd", M=500) == {"M": 500.0}
    assert estimator_params("SSD_no_rescale", M=500) == {"M": 500.0}  # the ablations have M too
    assert estimator_params("csd", M=500, guidance_scale=50) == {}  # neither field
    assert estimator_params("nfsd", guidance_scale=50) == {"guidance_scale": 50.0}  # every taker by default
    assert estimator_params("nfsd", guidance_scale=50, scale_takers=("sds",)) == {}  # keeps its 7.5
    assert estimator_params("sds", guidance_scale=100, scale_takers=("sds",)) == {"guidance_scale": 100.0}


def test_explicit_params_win_and_are_copied():
    given = {"M": 50.0, "backend": "torch"}
    out = estimator_params("ssd", given, M=500)
    assert out == {"M": 50.0, "backend": "torch"} and out is not given
    assert canonical_name("SDS_Bridge") == "sds-bridge"
    with pytest.raises(ValueError, match="sdss"):
        estimator_params("sdss")


def test_grad_norm_warns_for_ssd_only():
    with pytest.warns(UserWarning, match=r"--norm replaces each sample's gradient.*turn it off for SSD"):
        warn_if_grad_norm_erases("ssd-no-vr", True, "--norm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_grad_norm_erases("sds", True)
        warn_if_grad_norm_erases("ssd", False)
