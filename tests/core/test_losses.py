"""Gradient injection and threestudio's loss: exact gradients, AMP scaling, per-sample options."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ssd_toolkit.losses import clip_per_sample, inject_gradient, normalize_per_sample, sds_loss  # noqa: E402


def leaf(shape=(3, 4, 5, 5), dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).requires_grad_(True)


def grad_of(loss_fn, x, g, **kw):
    x.grad = None
    loss = loss_fn(x, g, **kw)
    loss.backward()
    return loss, x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_inject_gives_exactly_g(dtype):
    x = leaf(dtype=dtype)
    g = leaf(seed=1, dtype=dtype).detach() * 3
    loss, gx = grad_of(inject_gradient, x, g)
    assert loss.item() == 0.0 and loss.ndim == 0
    assert gx.dtype == dtype and torch.equal(gx, g)


@pytest.mark.parametrize("B", [1, 3, 4])
def test_sds_loss_gives_exactly_g_over_B_and_threestudio_value(B):
    x = leaf((B, 4, 8, 8), dtype=torch.float32)
    g = leaf((B, 4, 8, 8), seed=1).detach()
    loss, gx = grad_of(sds_loss, x, g)
    assert torch.equal(gx, g / B)
    literal = 0.5 * ((x - (x - g).detach()) ** 2).sum() / B
    torch.testing.assert_close(loss, literal.detach(), rtol=1e-5, atol=0)


def test_sds_loss_equals_the_literal_expression_where_that_is_exact():
    # Dyadic values: x - g and x - (x - g) are exact, and B = 4 divides exactly.
    x = (torch.arange(4 * 6, dtype=torch.float32).reshape(4, 6) / 8).requires_grad_(True)
    g = torch.linspace(-3, 3, 24, dtype=torch.float32).reshape(4, 6).round() / 4
    literal = 0.5 * ((x - (x - g).detach()) ** 2).sum() / 4
    literal.backward()
    g_literal = x.grad.clone()
    loss, gx = grad_of(sds_loss, x, g)
    assert torch.equal(gx, g_literal) and torch.equal(gx, g / 4)
    assert loss.item() == literal.item()


def test_literal_expression_loses_small_gradients_injection_does_not():
    x = torch.full((2, 3), 1e8, dtype=torch.float32, requires_grad=True)
    g = torch.full((2, 3), 1e-3, dtype=torch.float32)
    (0.5 * ((x - (x - g).detach()) ** 2).sum() / 2).backward()
    assert torch.all(x.grad == 0)  # cancellation: x - g rounds to x
    _, gx = grad_of(sds_loss, x, g)
    assert torch.equal(gx, g / 2)


@pytest.mark.parametrize("fn,div", [(inject_gradient, 1), (sds_loss, 2)])
def test_grad_scaler_scales_and_unscales(fn, div):
    x = leaf((2, 3, 4))
    g = leaf((2, 3, 4), seed=1).detach()
    opt = torch.optim.SGD([x], lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(fn(x, g)).backward()
    assert torch.equal(x.grad, g / div * 1024)
    scaler.unscale_(opt)
    assert torch.equal(x.grad, g / div)


def test_injection_adds_to_other_losses():
    x = leaf((2, 5))
    g = leaf((2, 5), seed=1).detach()
    (inject_gradient(x, g) + (x**2).sum()).backward()
    torch.testing.assert_close(x.grad, g + 2 * x.detach(), rtol=0, atol=0)


def test_gradient_flows_to_parameters_through_x():
    theta = torch.tensor([2.0, -1.0], requires_grad=True)
    x = theta[None, :] * torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # x = theta * a, dx/dtheta = a
    g = torch.tensor([[1.0, 1.0], [0.5, -1.0]])
    inject_gradient(x, g).backward()
    assert torch.equal(theta.grad, torch.tensor([1.0 + 1.5, 2.0 - 4.0]))


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_normalize_and_clip_per_sample(lib):
    rng = np.random.default_rng(0)
    g = rng.standard_normal((4, 3, 5)) * np.array([0.1, 1.0, 10.0, 0.0])[:, None, None]
    norms = np.linalg.norm(g.reshape(4, -1), axis=1)
    arr = torch.from_numpy(g) if lib == "torch" else g
    unit = np.asarray(normalize_per_sample(arr))
    np.testing.assert_allclose(np.linalg.norm(unit.reshape(4, -1), axis=1), [1, 1, 1, 0], rtol=1e-12)
    np.testing.assert_allclose(unit[:3], g[:3] / norms[:3, None, None], rtol=1e-12)
    assert norms[1] < 20.0 < norms[2]
    clipped = np.asarray(clip_per_sample(arr, 20.0))
    np.testing.assert_array_equal(clipped[[0, 1, 3]], g[[0, 1, 3]])  # under the bound: untouched
    np.testing.assert_allclose(np.linalg.norm(clipped[2]), 20.0, rtol=1e-12)
    np.testing.assert_allclose(clipped[2], g[2] * 20.0 / norms[2], rtol=1e-12)


def test_options_are_off_by_default_and_applied_in_the_loss():
    x = leaf((3, 8))
    g = torch.randn(3, 8, dtype=torch.float32) * torch.tensor([[0.1], [1.0], [10.0]])
    _, gx = grad_of(inject_gradient, x, g)
    assert torch.equal(gx, g)
    _, gx = grad_of(inject_gradient, x, g, normalize=True)
    torch.testing.assert_close(gx.norm(dim=1), torch.ones(3), rtol=1e-6, atol=0)
    _, gx = grad_of(sds_loss, x, g, max_norm=1.0)
    assert torch.all(gx.double().norm(dim=1) <= 1.0 / 3 * (1 + 1e-6))
    # normalize erases magnitude: 10 g and g give the same gradient.
    _, a = grad_of(inject_gradient, x, g, normalize=True)
    _, b = grad_of(inject_gradient, x, 10 * g, normalize=True)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_half_normalisation_in_float32():
    g = torch.randn(2, 64, dtype=torch.float16) * 300
    out = normalize_per_sample(g)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float().norm(dim=1), torch.ones(2), rtol=2e-3, atol=0)


def test_errors():
    x = leaf((2, 3))
    with pytest.raises(ValueError, match=r"grad: expected x's shape \[2, 3\], got \[3, 2\]"):
        inject_gradient(x, torch.zeros(3, 2))
    with pytest.raises(TypeError, match="grad: expected a torch.Tensor, got ndarray"):
        sds_loss(x, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="x: expected a floating dtype, got int64"):
        inject_gradient(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x: expected shape \\[B, ...\\] with at least one dimension"):
        inject_gradient(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match="max_norm: expected a positive finite number, got 0"):
        sds_loss(x, torch.zeros(2, 3), max_norm=0)
    with pytest.raises(TypeError, match="g: expected a floating dtype"):
        normalize_per_sample(np.zeros((2, 3), dtype=np.int32))
