"""DreamWaltz's timestep schedule (``guide.time_sampling``) in the drop-in, against values
worked out from DreamWaltz's definitions."""

import pytest

torch = pytest.importorskip("torch")

from ssd_toolkit.integrations.dreamwaltz.timesteps import DreamWaltzTimesteps  # noqa: E402


def test_uniform_draws_like_dreamwaltz_from_the_global_generator():
    sampler = DreamWaltzTimesteps("uniform", 0.02, 0.98)
    torch.manual_seed(4)
    t = sampler(5, 1, 100)
    torch.manual_seed(4)
    assert torch.equal(t, torch.randint(20, 981, [5], dtype=torch.long))
    assert t.dtype == torch.long and t.shape == (5,)


def test_constant_and_linear():
    torch.manual_seed(0)
    assert DreamWaltzTimesteps("constant")(3, 7, 10).tolist() == [500] * 3
    after = torch.rand(1)
    torch.manual_seed(0)
    torch.randint(500, 501, [3])  # DreamWaltz draws the constant too: the next draws must line up
    assert torch.equal(torch.rand(1), after)
    linear = DreamWaltzTimesteps("linear", 0.02, 0.98)
    assert linear(2, 1, 11).tolist() == [980, 980]  # the trainer counts steps from 1
    assert linear(1, 6, 11).tolist() == [500]
    assert linear(1, 11, 11).tolist() == [20]


def test_stages_go_from_high_to_low_t():
    sampler = DreamWaltzTimesteps("stage_4", 0.02, 0.98)  # stages of (980 - 20) // 4 = 240 steps
    bounds = [(740, 980), (500, 740), (260, 500), (20, 260)]
    for step, (lo, hi) in zip((0, 25, 50, 99), bounds):  # 100 iterations, 25 per stage
        t = sampler(64, step, 100)
        assert int(t.min()) >= lo and int(t.max()) <= hi, (step, t.min(), t.max())


def test_annealed_uniform_prior_walks_t_down_linearly():
    sampler = DreamWaltzTimesteps("annealed", 0.02, 0.98, time_prior="uniform")
    ts = [int(sampler(1, step, 1000)) for step in range(0, 1001, 50)]
    assert ts[0] == 980 and ts[-1] in (20, 21)
    assert all(a >= b for a, b in zip(ts, ts[1:]))
    assert abs(ts[10] - 500) <= 2  # half way through the run, half way through [20, 980]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"time_sampling": "exp"}, r"guide.time_sampling: expected one of"),
        ({"time_sampling": "stage_0"}, r"guide.time_sampling: expected one of .* \(N >= 1\), got 'stage_0'"),
        ({"time_sampling": "annealed", "time_prior": "dreamtime"}, r"guide.time_prior: expected one of \('uniform',\)"),
        ({"min_timestep": 0.5, "max_timestep": 0.4}, r"guide.min_timestep, guide.max_timestep: expected 0 <= min"),
    ],
)
def test_bad_schedule_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DreamWaltzTimesteps(**kwargs)
