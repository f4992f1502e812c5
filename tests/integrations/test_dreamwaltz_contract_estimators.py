"""DreamWaltz's trainer step through the drop-in with ``guide.estimator = "ism"``; the
three-branch estimators are refused with the reason (its trainer passes [uncond; cond] only)."""

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from test_dreamwaltz_contract import S, build, tiny_dir, trainer_step  # noqa: E402, F401 - fixture and helpers


def test_ism_step_runs_its_inversion(tiny_dir):
    g = build(tiny_dir, estimator="ism", grad_norm=False)
    out = trainer_step(g, torch.randn(2, 4, S, S, requires_grad=True), train_step=1, max_step=10, B=2)
    delta = 80 + math.ceil((1 - 1 / 3) * 20)  # interval annealed: warm-up over 30% of 10 steps
    s = (out["t"] - delta).clamp(min=0)
    calls = max(1, math.ceil(int(s.max()) / 200)) + 1 + 1  # inversion, the call at s, the CFG call
    assert out["diagnostics"]["unet_calls"] == calls
    assert torch.isfinite(out["gradients"]).all()
    torch.testing.assert_close(out["gradients"], out["noise_residual"])  # sjc weighting: w = 1


@pytest.mark.parametrize("name", ["csd-annealed", "sds-bridge"])
def test_three_branch_estimators_are_refused_with_the_reason(tiny_dir, name):
    with pytest.raises(ValueError, match=r"DreamWaltz's trainer passes \[uncond; cond\] text only"):
        build(tiny_dir, estimator=name)
