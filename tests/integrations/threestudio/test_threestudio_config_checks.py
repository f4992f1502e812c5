"""ssd-toolkit-guidance's settings are refused when the config is checked, before any network
loads, in one line naming ``system.guidance.<key>``, the expected and the received value; a
CFG scale the chosen estimator does not use is warned once, saying why."""

import math
import warnings

import pytest

from ssd_toolkit.integrations.threestudio.config import GuidanceConfig, check_config, estimator_arguments

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    "settings, key, expected",
    [
        ({"min_step_percent": NAN}, "min_step_percent", "expected a finite number"),
        ({"max_step_percent": INF}, "max_step_percent", "expected a finite number"),
        ({"min_step_percent": -0.1}, "min_step_percent", "expected values in [0, 1)"),
        ({"max_step_percent": 1.5}, "max_step_percent", "expected values in [0, 1)"),
        ({"max_step_percent": 1.0}, "max_step_percent", "expected values in [0, 1)"),
        ({"max_step_percent": [0, 0.98, NAN, 100]}, "max_step_percent", "expected finite numbers"),
        ({"max_step_percent": [0, 0.98, 0.5, INF]}, "max_step_percent", "expected finite numbers"),
        ({"max_step_percent": [0, 0.98, 1.2, 100]}, "max_step_percent", "expected values in [0, 1)"),
        ({"max_step_percent": [0, 0.98, 0.5, 100, -0.2, 200]}, "max_step_percent", "expected values in [0, 1)"),
        # [start_step, start_value, end_value] without its end_step: read as [start_value, end_value, end_step]
        ({"max_step_percent": [4999, 0.98, 0.5]}, "max_step_percent",
         "3 entries are read as [start_value, end_value, end_step]: [start_step, start_value, end_value, end_step] "
         "expected 4 entries"),
        ({"min_step_percent": 0.6, "max_step_percent": 0.3}, "min_step_percent",
         "expected at most system.guidance.max_step_percent at every step, got 0.6 > 0.3 at step 0"),
        # equal at step 0, crossing later: max falls to 0.2 by step 100 while min stays 0.3
        ({"min_step_percent": 0.3, "max_step_percent": [0, 0.3, 0.2, 100]}, "min_step_percent",
         "got 0.3 > 0.2 at step 100"),
        ({"grad_clip": NAN}, "grad_clip", "expected a finite number"),
        ({"grad_clip": [0, 1.0, NAN, 100]}, "grad_clip", "expected finite numbers"),
        ({"grad_clip": -1.0}, "grad_clip", "expected None or clip values > 0"),
        ({"grad_clip": 0}, "grad_clip", "expected None or clip values > 0"),
        ({"sqrt_anneal": True, "trainer_max_steps": 0}, "trainer_max_steps", "expected an integer >= 1 with sqrt_anneal"),
        ({"trainer_max_steps": 2.5}, "trainer_max_steps", "expected an integer"),
        ({"guidance_scale": -3.0}, "guidance_scale", "expected a finite number >= 0"),
        ({"guidance_scale": NAN}, "guidance_scale", "expected a finite number >= 0"),
        ({"guidance_scale": "7.5"}, "guidance_scale", "expected a number >= 0"),
    ],
)
def test_bad_guidance_settings_are_refused_naming_the_key(settings, key, expected):
    with pytest.raises((ValueError, TypeError)) as info:
        check_config(GuidanceConfig(**settings))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"system.guidance.{key}: "), message
    assert expected in message, message
    received = repr(settings[key])
    assert received in message, message  # the value as given


GOOD = [{}, {"min_step_percent": 0.0, "max_step_percent": 0.999}, {"max_step_percent": [4999, 0.98, 0.5, 5000]},
        {"min_step_percent": [0, 0.02, 0.5, 100], "max_step_percent": [0, 0.98, 0.5, 100]},
        {"grad_clip": [0, 2.0, 8.0, 500]}, {"sqrt_anneal": True, "trainer_max_steps": 1}, {"guidance_scale": 0.0}]


def test_settings_are_refused_before_any_network_loads_and_good_ones_pass(monkeypatch):
    for settings in GOOD:  # the checks refuse nothing a run can use
        check_config(GuidanceConfig(**settings))
    pytest.importorskip("torch")
    from ssd_toolkit.integrations.guidance import models
    from ssd_toolkit.integrations.threestudio.adapter import ThreestudioGuidance

    def must_not_load(*args, **kwargs):
        raise AssertionError("the networks were loaded before the settings were checked")

    monkeypatch.setattr(models, "load_models", must_not_load)
    for settings in ({"min_step_percent": NAN}, {"grad_clip": NAN}, {"sqrt_anneal": True, "trainer_max_steps": 0},
                     {"guidance_scale": -1.0}):  # fmt: skip
        with pytest.raises(ValueError, match="^system.guidance."):
            ThreestudioGuidance(settings)


def _arguments(**settings):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        name, params = estimator_arguments(GuidanceConfig(**settings))
    return params, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_guidance_scale_for_an_estimator_without_one_is_warned_once_and_only_there():
    params, warned = _arguments(estimator="ssd", guidance_scale=7.5)
    assert "guidance_scale" not in params
    assert warned == ["system.guidance.guidance_scale=7.5 is ignored: ssd has no CFG scale"]
    assert _arguments(estimator="sds", guidance_scale=7.5) == ({"cfg": "threestudio", "guidance_scale": 7.5}, [])
    # not given: threestudio's SDS default (stable-diffusion-guidance's 100), and nothing to warn
    assert _arguments(estimator="sds") == ({"cfg": "threestudio", "guidance_scale": 100.0}, [])
    assert _arguments(estimator="ssd")[1] == []


def test_guidance_scale_for_an_estimator_with_its_own_default_is_warned():
    import ssd_toolkit

    params, warned = _arguments(estimator="nfsd", guidance_scale=100.0)
    own = ssd_toolkit.get_estimator("nfsd").guidance_scale
    assert params.get("guidance_scale", own) == own
    assert len(warned) == 1 and warned[0].startswith("system.guidance.guidance_scale=100.0 is ignored: nfsd keeps")


def test_guidance_scale_overridden_by_estimator_params_is_warned():
    params, warned = _arguments(estimator="sds", guidance_scale=50.0, estimator_params={"guidance_scale": 7.5})
    assert params["guidance_scale"] == 7.5
    assert len(warned) == 1 and "own guidance_scale among its estimator arguments wins" in warned[0]
