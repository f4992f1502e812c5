"""Timestep samplers: ranges, schedule breakpoints, determinism under a seed, errors."""

import numpy as np
import pytest

from ssd_toolkit import get_sampler, list_samplers


def test_names_listed():
    assert set(list_samplers()) == {"uniform", "paper", "ssd", "piecewise-linear", "threestudio", "dreamtime"}


def test_uniform_range_inclusive_and_int64():
    s = get_sampler("uniform", seed=0)
    t = s.sample(20000)
    assert t.dtype == np.int64 and t.shape == (20000,)
    assert t.min() == 20 and t.max() == 980  # both ends are reached: inclusive
    assert s.t_range(123) == (20, 980)
    assert get_sampler("uniform", seed=1, t_min=5, t_max=5).sample(3).tolist() == [5, 5, 5]


@pytest.mark.parametrize(
    ("name", "params"),
    [("uniform", {}), ("paper", {}), ("threestudio", {"max_step_percent": [0, 0.98, 0.5, 5000]})],
)
def test_deterministic_under_seed(name, params):
    a, b, c = (get_sampler(name, seed=s, **params) for s in (7, 7, 8))
    draws_a = [a.sample(16, step) for step in (0, 10, 6000)]
    draws_b = [b.sample(16, step) for step in (0, 10, 6000)]
    draws_c = [c.sample(16, step) for step in (0, 10, 6000)]
    for x, y in zip(draws_a, draws_b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(draws_a, draws_c))


def test_paper_schedule_breakpoint():
    s = get_sampler("paper", seed=0)
    assert s.t_range(0) == (20, 980)
    assert s.t_range(4999) == (20, 980)
    assert s.t_range(5000) == (20, 500)
    late = s.sample(5000, step=5000)
    assert late.min() == 20 and late.max() == 500
    custom = get_sampler("ssd", anneal_step=100, t_max_annealed=300)
    assert custom.t_range(99) == (20, 980) and custom.t_range(100) == (20, 300)


def test_threestudio_rule():
    s = get_sampler("threestudio", seed=0, min_step_percent=0.02, max_step_percent=[1000, 0.98, 0.5, 5000])
    assert s.t_range(0) == (20, 980)  # before start_step: the start value
    assert s.t_range(1000) == (20, 980)
    assert s.t_range(3000) == (20, int(1000 * (0.98 + (0.5 - 0.98) * 0.5)))
    assert s.t_range(5000) == (20, 500)
    assert s.t_range(90000) == (20, 500)  # after end_step: the end value
    three = get_sampler("threestudio", max_step_percent=[0.98, 0.5, 5000])  # 3-element: start_step 0
    assert three.t_range(2500) == (20, 740)
    t = s.sample(4000, step=5000)
    assert t.min() >= 20 and t.max() <= 500


def test_threestudio_clips_to_last_timestep():
    assert get_sampler("threestudio", max_step_percent=1.0).t_range(0) == (20, 999)


def test_dreamtime_monotone_and_endpoints():
    s = get_sampler("dreamtime", total_steps=1000, seed=0)
    ts = [s.t_range(step)[0] for step in range(0, 1001, 50)]
    assert ts[0] == 980 and ts[-1] == 20
    assert all(a >= b for a, b in zip(ts, ts[1:]))
    assert s.t_range(5000) == (20, 20)
    np.testing.assert_array_equal(s.sample(4, step=500), np.full(4, s.t_at(500), dtype=np.int64))
    # Half the prior mass lies above t(total/2), by construction.
    mid = s.t_at(500)
    assert s.prior[s.timesteps >= mid].sum() >= 0.5 > s.prior[s.timesteps > mid].sum()
    # The Gaussian bump centres the schedule: most steps are spent near the mean.
    assert 350 < mid < 650


def test_dreamtime_needs_total_steps():
    # one line in the project's form, not Python's "missing 1 required positional argument"
    with pytest.raises(TypeError, match=r"^total_steps: expected an integer >= 1, .*got None$"):
        get_sampler("dreamtime")


@pytest.mark.parametrize(
    ("name", "params", "exc", "pattern"),
    [
        ("uniform", {"t_min": 500, "t_max": 100}, ValueError, r"t_max: expected >= t_min = 500, got 100"),
        ("uniform", {"t_min": 2.5}, TypeError, r"t_min: expected an integer >= 0, got float 2.5"),
        ("threestudio", {"max_step_percent": [0, 0.98, 0.5, 0]}, ValueError, r"max_step_percent: expected end_step > start_step = 0, got 0"),
        ("threestudio", {"max_step_percent": [0, 1.5, 0.5, 10]}, ValueError, r"max_step_percent start_value: expected a fraction in \[0, 1\], got 1.5"),
        ("threestudio", {"max_step_percent": [1, 2]}, ValueError, r"max_step_percent: expected a float or a 3/4-element rule"),
        ("dreamtime", {"total_steps": 0}, ValueError, r"total_steps: expected an integer >= 1, got 0"),
        ("dreamtime", {"total_steps": 10, "std": 0}, ValueError, r"std: expected a positive number, got 0"),
        ("nope", {}, ValueError, r"name: expected one of \[.*'dreamtime'.*\], got 'nope'"),
    ],
)
def test_bad_parameters(name, params, exc, pattern):
    with pytest.raises(exc, match=pattern):
        get_sampler(name, **params)


def test_bad_call_arguments():
    s = get_sampler("uniform", seed=0)
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 0, got -1"):
        s.sample(-1)
    with pytest.raises(TypeError, match="step: expected an integer >= 0, got float 1.0"):
        s.sample(2, 1.0)
    assert s.sample(0).shape == (0,)
    empty = get_sampler("threestudio", min_step_percent=0.6, max_step_percent=[0, 0.98, 0.5, 10])
    with pytest.raises(ValueError, match="at step 10 the range is empty"):
        empty.t_range(10)


@pytest.mark.parametrize("name, params", [("uniform", {}), ("paper", {}), ("piecewise-linear", {}), ("dreamtime", {"total_steps": 100})])
def test_saved_rng_state_replays_the_same_timesteps(name, params):
    sampler = get_sampler(name, seed=3, **params)
    sampler.sample(4, step=1)
    saved = sampler.rng.bit_generator.state
    expected = [sampler.sample(4, step=s) for s in (2, 3)]
    fresh = get_sampler(name, seed=99, **params)
    fresh.rng.bit_generator.state = saved
    for s, want in zip((2, 3), expected):
        np.testing.assert_array_equal(fresh.sample(4, step=s), want)


def test_a_misspelled_parameter_is_one_line_with_did_you_mean():
    with pytest.raises(TypeError) as info:
        get_sampler("uniform", min_t=100)
    message = str(info.value)
    assert "\n" not in message and message.startswith("min_t: ") and "(did you mean 't_min'?)" in message, message
