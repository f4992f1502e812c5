"""torch: the rows of docs/api.md's framework table (eager CPU, backend='torch', compile,
torch.func.vmap / grad, meta and fake tensors, neg-bit views, unsupported devices)."""

import warnings

import pytest

torch = pytest.importorskip("torch")

import ssd_toolkit  # noqa: E402
from conftest import M, T, reference  # noqa: E402
from tolerances import assert_close_to_reference  # noqa: E402


def _tensors(inputs, dtype=torch.float32):
    return [torch.from_numpy(x).to(dtype) for x in inputs]


def test_eager_cpu_and_backend_torch_match_the_reference(inputs):
    c, u, n = _tensors(inputs, torch.float64)
    E_ref, _ = reference(c, u, n)
    for backend in ("auto", "torch"):
        E = ssd_toolkit.estimate(c, u, n, torch.from_numpy(T), M, backend=backend)
        assert type(E) is torch.Tensor and E.dtype == torch.float64
        assert_close_to_reference(E, E_ref, "float64")


def test_vmap_equals_a_loop_of_calls(inputs):
    """Every vmapped index is its own batch: the vmapped dims fold into the batch."""
    c, u, n = (x.reshape(2, 2, 3, 5, 6) for x in _tensors(inputs))
    t = torch.from_numpy(T.reshape(2, 2)).double()

    def f(c, u, n, t):
        return ssd_toolkit.estimate(c, u, n, t, M)

    vmapped = torch.func.vmap(f)(c, u, n, t)
    loop = torch.stack([f(c[i], u[i], n[i], t[i]) for i in range(2)])
    torch.testing.assert_close(vmapped, loop, rtol=0, atol=0)
    # unbatched inputs (in_dims None) are broadcast, a scalar t too
    shared = torch.func.vmap(f, in_dims=(0, None, None, None))(c, u[0], n[0], 150.0)
    torch.testing.assert_close(shared[1], f(c[1], u[0], n[0], 150.0), rtol=0, atol=0)
    # stats come out vmapped as well
    E, stats = torch.func.vmap(lambda c, u, n, t: ssd_toolkit.estimate(c, u, n, t, M, return_stats=True))(c, u, n, t)
    assert stats["scale"].shape == (2, 2) and stats["mode_seeking"].tolist() == [[True, False], [True, False]]


def test_grad_through_estimate_is_zero_and_warns(inputs):
    """The estimator is a constant: d/dx <x, E(x)> is E, not E + x dE/dx."""
    c, u, n = _tensors(inputs, torch.float64)
    t = torch.from_numpy(T)

    def loss(x):
        return (x * ssd_toolkit.estimate(x, u, n, t, M)).sum()

    with pytest.warns(UserWarning, match="not differentiable"):
        g = torch.func.grad(loss)(c)
    torch.testing.assert_close(g, ssd_toolkit.estimate(c, u, n, t, M), rtol=0, atol=0)
    x = c.clone().requires_grad_()
    with pytest.warns(UserWarning, match="not differentiable"):
        E = ssd_toolkit.estimate(x, u, n, t, M)
    assert not E.requires_grad


def test_meta_and_fake_tensors_give_shapes_without_data():
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode  # noqa: PLC0415

    meta = [torch.empty(3, 4, 5, device="meta", dtype=torch.bfloat16) for _ in range(3)]
    E, stats = ssd_toolkit.estimate(*meta, 10, M, return_stats=True)
    assert E.device.type == "meta" and E.shape == (3, 4, 5) and E.dtype == torch.bfloat16
    assert stats["r"].shape == (3,) and stats["r"].dtype == torch.float64
    with FakeTensorMode():
        fake = [torch.empty(3, 20) for _ in range(3)]
        E = ssd_toolkit.estimate(*fake, torch.tensor([1, 2, 300]), M)
    assert isinstance(E, FakeTensor) and E.shape == (3, 20)


def test_compile_fullgraph_equals_eager(inputs):
    c, u, n = _tensors(inputs)
    t = torch.from_numpy(T)
    compiled = torch.compile(lambda c, u, n, t: ssd_toolkit.estimate(c, u, n, t, M), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(c, u, n, t), ssd_toolkit.estimate(c, u, n, t, M), rtol=0, atol=0)


def test_neg_bit_views_are_resolved(inputs):
    c, u, n = _tensors(inputs)
    t = torch.from_numpy(T)
    expected = ssd_toolkit.estimate(-c, u, n, t, M)
    for backend in ("auto", "reference"):
        torch.testing.assert_close(ssd_toolkit.estimate(torch._neg_view(c), u, n, t, M, backend=backend), expected)


def test_other_devices_name_the_device_and_backend_torch(inputs, monkeypatch):
    """Off cpu and cuda the kernels cannot run: backend='compiled' gives one clear error; 'auto'
    runs PyTorch eager there. No device here has such tensors, so the route is driven with tensors
    that report one."""
    c, u, n = _tensors(inputs)

    class OnXpu(torch.Tensor):
        @property
        def device(self):
            return torch.device("xpu")

    fakes = [x.as_subclass(OnXpu) for x in (c, u, n)]
    with pytest.raises(ValueError, match=r"eps_cond: the compiled kernels run on cpu and cuda tensors, got xpu; "
                                         r"pass backend='torch'"):
        ssd_toolkit.estimate(*fakes, 10.0, M, backend="compiled")


def test_requires_grad_warning_points_at_the_caller(inputs):
    c, u, n = _tensors(inputs)
    c.requires_grad_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ssd_toolkit.estimate(c, u, n, 10, M)
    assert caught and caught[0].filename == __file__


def test_backend_torch_keeps_device_timesteps_on_their_device():
    """backend='torch' runs where the data are: a device ``t`` is used there (meta stands in
    for a device without the compiled kernels)."""
    meta = [torch.empty(3, 4, device="meta") for _ in range(3)]
    E, stats = ssd_toolkit.estimate(*meta, torch.zeros(3, device="meta"), M, backend="torch", return_stats=True)
    assert E.device.type == "meta" and E.shape == (3, 4) and stats["scale"].shape == (3,)
    with pytest.raises(ValueError, match=r"t: expected a scalar or a vector of length B=3, got shape \[2\]"):
        ssd_toolkit.estimate(*meta, torch.zeros(2, device="meta"), M, backend="torch")


def test_first_call_of_a_process_may_be_inside_torch_compile():
    """The backend registry's first look-up of torch.Tensor happens while Dynamo traces."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = (
        "import torch, ssd_toolkit\n"
        "c, u, n = (torch.randn(3, 4) for _ in range(3))\n"
        "t = torch.tensor([1.0, 300.0, 2.0])\n"
        "f = torch.compile(lambda c, u, n: ssd_toolkit.estimate(c, u, n, t, 200.0), fullgraph=True, backend='eager')\n"
        "got = f(torch._neg_view(c), u, n)\n"
        "torch.testing.assert_close(got, ssd_toolkit.estimate(-c, u, n, t, 200.0), rtol=0, atol=0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
