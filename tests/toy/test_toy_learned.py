"""The learned CFG denoiser of ``toy trajectories --denoiser learned``: seeded, cached, close to
the exact scores where they are large, and a drop-in for the exact mixture in ``distill``."""

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ssd_toolkit  # noqa: E402
from ssd_toolkit.cli import main  # noqa: E402
from ssd_toolkit.toy import learned_denoiser as ld  # noqa: E402
from ssd_toolkit.toy.mixture import paper_mixture  # noqa: E402

SMALL = ld.DenoiserSettings(seed=3, steps=300, batch=256, hidden=32, layers=2, lr=5e-3)


@pytest.fixture(scope="module")
def problem():
    mixture, mask = paper_mixture()
    return mixture, mask, ssd_toolkit.stable_diffusion_schedule()


def test_training_is_seeded(problem):
    a, _ = ld.train(*problem, ld.DenoiserSettings(seed=1, steps=20, batch=64, hidden=16, layers=1))
    b, _ = ld.train(*problem, ld.DenoiserSettings(seed=1, steps=20, batch=64, hidden=16, layers=1))
    c, _ = ld.train(*problem, ld.DenoiserSettings(seed=2, steps=20, batch=64, hidden=16, layers=1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_cache_is_reused_and_retrained_when_settings_change(problem, tmp_path):
    model, info = ld.load_or_train(tmp_path, *problem, SMALL)
    assert info["cached"] is False and (tmp_path / ld.CACHE_NAME).is_file()
    again, info2 = ld.load_or_train(tmp_path, *problem, SMALL)
    assert info2["cached"] is True and info2["final_loss_mean_last_100"] == info["final_loss_mean_last_100"]
    x = np.random.default_rng(0).standard_normal((5, 2))
    assert np.array_equal(model.eps_hat_pair(x, 0.5, 0.8)[0], again.eps_hat_pair(x, 0.5, 0.8)[0])
    other = dataclasses.replace(SMALL, seed=4)
    assert ld.load_or_train(tmp_path, *problem, other)[1]["cached"] is False


def test_learned_eps_is_close_to_the_exact_one_at_large_t(problem, tmp_path):
    """Even a 300-step network beats predicting zero by far where eps_hat is large."""
    mixture, mask, schedule = problem
    model, _ = ld.load_or_train(tmp_path, *problem, SMALL)
    rows = ld.fidelity(model, mixture, mask, schedule, np.random.default_rng(1), n=512, ts=(500, 800))
    assert all(r["eps_cond"] < 0.3 and r["eps_uncond"] < 0.3 for r in rows), rows


def test_cli_writes_learned_outputs_beside_the_exact_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(ld, "DenoiserSettings", lambda seed=0: dataclasses.replace(SMALL, seed=seed))  # a quick network
    assert main(["toy", "trajectories", "--denoiser", "learned", "--seeds", "2", "--steps", "30", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "trajectories_learned.json").read_text())
    assert summary["denoiser"]["kind"] == "learned CFG MLP" and len(summary["denoiser"]["fidelity"]) == 6
    assert (tmp_path / "trajectories_learned.png").stat().st_size > 0
    assert "learned denoiser" in (tmp_path / "trajectories_learned.md").read_text()
    assert not (tmp_path / "trajectories.json").exists()
