"""The torch route as torch users call it: torch.func over any subset of the inputs, fullgraph
compile of estimators, weightings and losses, device-side timesteps, and the route's shape."""

import itertools
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ssd_toolkit  # noqa: E402
from ssd_toolkit.estimators import get_estimator, list_estimators  # noqa: E402
from tolerances import assert_close_to_reference  # noqa: E402

M = 200.0
ARGS = ("eps_cond", "eps_uncond", "noise", "t")


def _batch(V=3, B=2, shape=(4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    arrays = [torch.randn(V, B, *shape, generator=g, dtype=torch.float64) for _ in range(3)]
    t = torch.tensor([[10.0, 900.0], [300.0, 150.0], [200.0, 201.0]][:V], dtype=torch.float64)
    return (*arrays, t)


@pytest.mark.parametrize("mapped", [s for r in range(1, 5) for s in itertools.combinations(range(4), r)],
                         ids=lambda s: "+".join(ARGS[i] for i in s))
def test_vmap_over_any_subset_of_the_inputs_equals_a_loop(mapped):
    """in_dims None for the inputs that are closed over: vmap over t alone crashed before
    (a host read of a tensor without storage)."""
    full = _batch()
    args = [full[i] if i in mapped else full[i][0] for i in range(4)]
    in_dims = tuple(0 if i in mapped else None for i in range(4))
    got = torch.func.vmap(lambda c, u, n, t: ssd_toolkit.estimate(c, u, n, t, M), in_dims=in_dims)(*args)
    loop = torch.stack([ssd_toolkit.estimate(*(a[v] if d == 0 else a for a, d in zip(args, in_dims)), M)
                        for v in range(3)])
    torch.testing.assert_close(got, loop, rtol=0, atol=0)


def test_vmap_stats_and_nested_vmap():
    c, u, n, t = _batch()
    E, stats = torch.func.vmap(lambda c, u, n, t: ssd_toolkit.estimate(c, u, n, t, M, return_stats=True))(c, u, n, t)
    for v in range(3):
        E_v, stats_v = ssd_toolkit.estimate(c[v], u[v], n[v], t[v], M, return_stats=True)
        torch.testing.assert_close(E[v], E_v, rtol=0, atol=0)
        torch.testing.assert_close(stats["scale"][v], stats_v["scale"], rtol=0, atol=0)
        assert torch.equal(stats["mode_seeking"][v], stats_v["mode_seeking"])
    inner = torch.func.vmap(lambda c, u, n, t: ssd_toolkit.estimate(c, u, n, t, M))
    twice = torch.func.vmap(inner)(*(x[None].expand(2, *x.shape) for x in (c, u, n, t)))
    torch.testing.assert_close(twice[1], inner(c, u, n, t), rtol=0, atol=0)


def test_a_non_finite_t_under_vmap_is_an_error():
    c, u, n, t = _batch()
    t = t.clone()
    t[1, 0] = float("nan")
    with pytest.raises((ValueError, RuntimeError), match="t: expected finite timesteps"):
        torch.func.vmap(lambda t: ssd_toolkit.estimate(c[0], u[0], n[0], t, M))(t)


def test_jacrev_is_zero_because_the_result_is_a_constant():
    c, u, n, t = (x[0] for x in _batch())
    with pytest.warns(UserWarning, match="not differentiable"):
        jac = torch.func.jacrev(lambda x: ssd_toolkit.estimate(x, u, n, t, M))(c)
    assert jac.shape == (*c.shape, *c.shape) and not jac.any()


def _fullgraph(fn):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend="eager")


def test_a_bad_input_under_fullgraph_compile_carries_the_one_line_message():
    """Dynamo reports 'Observed exception'; the cause it chains holds our message."""
    c = torch.zeros(2, 3)
    with pytest.raises(Exception) as info:
        _fullgraph(lambda c: ssd_toolkit.estimate(c, c, c[:, :2], 1.0, M))(c)
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any(r"noise: expected shape [2, 3] (eps_cond's), got [2, 2]" in text for text in chain), chain


@pytest.mark.parametrize("name", list_estimators())
def test_every_estimator_traces_under_fullgraph_compile(name):
    g = torch.Generator().manual_seed(1)
    c, u, n, neg = (torch.randn(2, 4, 6, generator=g) for _ in range(4))
    t = torch.tensor([100, 900])
    est = get_estimator(name)

    def call(c, u, n, neg, t):
        return est(c, u, n, t, eps_negative=neg)

    torch.testing.assert_close(_fullgraph(call)(c, u, n, neg, t), call(c, u, n, neg, t), rtol=1e-6, atol=1e-6)


def test_a_compiled_sds_step_with_weighting_and_loss_matches_eager():
    abar = torch.as_tensor(ssd_toolkit.stable_diffusion_schedule().alphas_cumprod)
    weighting = ssd_toolkit.get_weighting("sds")
    est = get_estimator("ssd", M=200)

    def step(x, c, u, n, t):
        w = weighting(t, abar).view(-1, 1, 1).to(x.dtype)
        return ssd_toolkit.sds_loss(x, w * est(c, u, n, t))

    g = torch.Generator().manual_seed(2)
    c, u, n = (torch.randn(2, 4, 6, generator=g) for _ in range(3))
    t = torch.tensor([150, 700])
    grads = []
    for fn in (step, _fullgraph(step)):
        x = torch.zeros(2, 4, 6, requires_grad=True)
        fn(x, c, u, n, t).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-7)


def test_weighting_of_a_tensor_t_stays_a_tensor_on_its_device():
    abar = ssd_toolkit.stable_diffusion_schedule().alphas_cumprod
    t = torch.tensor([0, 500, 999])
    w = ssd_toolkit.get_weighting("fantasia3d")(t, abar)
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float64
    np.testing.assert_allclose(w.numpy(), ssd_toolkit.get_weighting("fantasia3d")(t.numpy(), abar), rtol=1e-15)
    with pytest.raises(ValueError, match=r"t: expected timesteps in \[0, 999\]"):
        ssd_toolkit.get_weighting("sds")(torch.tensor([1000]), abar)


@pytest.mark.parametrize("name", ["uniform", "paper", "threestudio"])
def test_samplers_draw_int64_tensors_on_a_device_reproducibly(name):
    a, b = ssd_toolkit.get_sampler(name, seed=3), ssd_toolkit.get_sampler(name, seed=3)
    t = a.sample(64, step=10, device="cpu")
    assert isinstance(t, torch.Tensor) and t.dtype == torch.int64 and t.device.type == "cpu"
    assert torch.equal(t, b.sample(64, step=10, device=torch.device("cpu")))
    lo, hi = a.t_range(10)
    assert int(t.min()) >= lo and int(t.max()) <= hi and len(set(t.tolist())) > 1
    assert not torch.equal(a.sample(64, step=10, device="cpu"), t)  # the generator advances


def test_sampler_tensors_go_straight_into_a_diffusers_scheduler():
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    latents, noise = torch.zeros(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = ssd_toolkit.get_sampler("paper", seed=0).sample(3, device=latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(noisy, (1 - abar).sqrt() * noise)


def test_the_eager_route_visits_at_most_four_files():
    """core -> registry -> the torch backend -> (the stats layout): the C++ op does the rest."""
    root = os.path.dirname(ssd_toolkit.__file__)
    c, u, n = (torch.randn(2, 4, 8) for _ in range(3))
    for t in (torch.tensor([100, 900]), 300.0):
        for stats in (False, True):
            ssd_toolkit.estimate(c, u, n, t, M, return_stats=stats)
            files = set()

            def tracer(frame, event, arg):
                if event == "call" and frame.f_code.co_filename.startswith(root):
                    files.add(os.path.relpath(frame.f_code.co_filename, root))

            sys.settrace(tracer)
            try:
                ssd_toolkit.estimate(c, u, n, t, M, return_stats=stats)
            finally:
                sys.settrace(None)
            assert len(files) <= 4, sorted(files)


def test_the_op_is_registered_from_cpp_where_its_library_is_built():
    from ssd_toolkit.engine import torch_op_build  # noqa: PLC0415
    from ssd_toolkit.frameworks.torch.op import op_status  # noqa: PLC0415

    compiled, reason = op_status()
    assert compiled == torch_op_build.library_path().exists() or reason, reason
    if not compiled:
        pytest.skip(f"op library not built: {reason}")
    c, u, n = (torch.randn(3, 7, dtype=torch.float64) for _ in range(3))
    with pytest.raises((ValueError, RuntimeError), match=r"eps_uncond: expected shape \[3, 7\]"):
        torch.ops.ssd_toolkit.estimate(c, u[:, :4], n, None, 1.0, M, False)
    E, _ = torch.ops.ssd_toolkit.estimate(c, u, n, None, 1.0, M, False)
    assert_close_to_reference(E, ssd_toolkit.reference.estimate_reference(c.numpy(), u.numpy(), n.numpy(),
                                                                          np.full(3, 1.0), M)[0], "float64")


def test_the_python_op_serves_the_same_route_where_the_library_is_not_loaded():
    """SSD_TOOLKIT_TORCH_OP=0 (as an install without the op library): the Python-defined op of
    the same schema gives the same results, vmap and fullgraph compile included."""
    import subprocess  # noqa: PLC0415

    script = (
        "import numpy as np, torch, ssd_toolkit\n"
        "from ssd_toolkit.frameworks.torch.op import op_status\n"
        "assert op_status() == (False, 'SSD_TOOLKIT_TORCH_OP=0'), op_status()\n"
        "g = torch.Generator().manual_seed(0)\n"
        "c, u, n = (torch.randn(3, 4, 5, generator=g, dtype=torch.float64) for _ in range(3))\n"
        "t = torch.tensor([10, 500, 200])\n"
        "E, stats = ssd_toolkit.estimate(c, u, n, t, 200, return_stats=True)\n"
        "ref = ssd_toolkit.estimate(c.numpy(), u.numpy(), n.numpy(), t.numpy(), 200)\n"
        "assert np.allclose(E.numpy(), ref, rtol=1e-12, atol=0), 'eager'\n"
        "V = torch.func.vmap(lambda tt: ssd_toolkit.estimate(c, u, n, tt, 200))(torch.stack([t, t.flip(0)]))\n"
        "assert torch.equal(V[1], ssd_toolkit.estimate(c, u, n, t.flip(0), 200)), 'vmap'\n"
        "f = torch.compile(lambda c, u, n, t: ssd_toolkit.estimate(c, u, n, t, 200), fullgraph=True, backend='eager')\n"
        "assert torch.equal(f(c, u, n, t), E), 'compile'\n"
        "try:\n"
        "    torch.ops.ssd_toolkit.estimate(c, u, n, torch.tensor([1.0, float('nan'), 2.0]), 0.0, 200.0, False)\n"
        "except ValueError as e:\n"
        "    assert 't: expected finite timesteps' in str(e)\n"
        "else:\n"
        "    raise AssertionError('nan t accepted')\n"
        "print('ok')\n"
    )
    env = {**os.environ, "SSD_TOOLKIT_TORCH_OP": "0"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
