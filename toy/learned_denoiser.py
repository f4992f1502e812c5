"""A learned classifier-free-guidance denoiser for the 2-d toy: is SSD's failure to reach a
conditional mode an artefact of exact scores?

An MLP ``eps_theta(x_t, t, label)`` with ``label`` in {y, null} (CFG's null label) is trained
on the paper's mixture: with probability ``null_fraction`` the label is null and
``x_0 ~ P(x)``, otherwise it is y and ``x_0 ~ P(x|y)``; t is uniform on [1, 999] of Stable
Diffusion's schedule, ``x_t = alpha_t x_0 + sigma_t eps``, loss ``||eps_theta - eps||^2``. The
network sees ``x_t``, the log signal-to-noise ratio (with a few Fourier features) and the
label. Training is seeded and cached under ``<out>/denoiser/``; ``LearnedDenoiser`` gives
``optimize.distill`` the exact mixture's ``eps_hat_pair`` interface. Needs torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time

import numpy as np

CACHE_NAME = os.path.join("denoiser", "learned_denoiser.pt")
FOURIER = 4  # sin/cos pairs of the log-SNR


@dataclasses.dataclass(frozen=True)
class DenoiserSettings:
    """What the cached network depends on (a different value retrains)."""

    seed: int = 0
    steps: int = 5000
    batch: int = 1024
    hidden: int = 128
    layers: int = 3
    lr: float = 2e-3
    null_fraction: float = 0.2
    t_range: tuple = (1, 999)


def _features(torch, x, log_snr, label_is_null):
    z = log_snr[:, None] / 8.0
    k = torch.arange(1, FOURIER + 1, dtype=x.dtype)[None]
    label = torch.stack([1.0 - label_is_null, label_is_null], dim=1)
    return torch.cat([x, z, torch.sin(k * z), torch.cos(k * z), label], dim=1)


def _network(torch, dim, settings):
    layers, width = [], dim + 1 + 2 * FOURIER + 2  # x_t, log-SNR, its Fourier features, label
    for _ in range(settings.layers):
        layers += [torch.nn.Linear(width, settings.hidden), torch.nn.SiLU()]
        width = settings.hidden
    layers.append(torch.nn.Linear(width, dim))
    return torch.nn.Sequential(*layers)


def train(mixture, cond_mask, schedule, settings=DenoiserSettings(), progress=False):
    """Train the network; returns ``(state_dict, info)`` (info: final loss, seconds)."""
    import torch  # noqa: PLC0415

    with one_torch_thread():
        return _train(torch, mixture, cond_mask, schedule, settings, progress)


@contextlib.contextmanager
def one_torch_thread():
    """torch on one thread inside the block: its matrices are tiny and a second thread only
    contends (measured 0.9 ms against 6.9 ms per ``eps_hat_pair`` call on 2 busy cores)."""
    import torch  # noqa: PLC0415

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(torch, mixture, cond_mask, schedule, settings, progress):
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    cond = mixture.subset(np.asarray(cond_mask, dtype=bool))
    net = _network(torch, mixture.dim, settings)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.steps)
    lo, hi = settings.t_range
    steps = range(settings.steps)
    if progress:
        from .progress import bar  # noqa: PLC0415

        steps = bar(steps, "training the learned denoiser")
    start, losses = time.perf_counter(), []
    for _ in steps:
        n = settings.batch
        null = rng.random(n) < settings.null_fraction
        x0 = np.where(null[:, None], mixture.sample(n, rng)[0], cond.sample(n, rng)[0])
        t = rng.integers(lo, hi + 1, n)
        a, s = schedule.alpha(t), schedule.sigma(t)
        eps = rng.standard_normal(x0.shape)
        x_t = a[:, None] * x0 + s[:, None] * eps
        inputs = _features(torch, *(torch.from_numpy(v.astype(np.float32)) for v in (x_t, np.log(a / s), null * 1.0)))
        loss = torch.mean((net(inputs) - torch.from_numpy(eps.astype(np.float32))) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    info = {"final_loss_mean_last_100": float(np.mean(losses[-100:])), "train_seconds": time.perf_counter() - start}
    return net.state_dict(), info


class LearnedDenoiser:
    """A trained network behind the exact mixture's interface (``dim``, ``num_components``,
    ``log_weights``, ``eps_hat_pair``); the condition is the network's label y, so the mask
    passed to ``eps_hat_pair`` is ignored."""

    def __init__(self, mixture, state_dict, settings=DenoiserSettings()):
        import torch  # noqa: PLC0415

        self._torch = torch
        self.mixture = mixture
        self.net = _network(torch, mixture.dim, settings)
        self.net.load_state_dict(state_dict)
        self.net.eval()

    @property
    def dim(self):
        return self.mixture.dim

    @property
    def num_components(self):
        return self.mixture.num_components

    def log_weights(self, mask=None, n=1):
        return self.mixture.log_weights(mask, n)

    def eps_hat_pair(self, x, alpha, sigma, mask=None):
        """``(eps_cond, eps_uncond)`` ``[N, d]`` float64 from the network (labels y and null)."""
        torch = self._torch
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[0]
        log_snr = np.log(np.broadcast_to(np.asarray(alpha, np.float64), (n,)) / np.broadcast_to(np.asarray(sigma, np.float64), (n,)))
        xs = torch.from_numpy(np.concatenate([x, x]).astype(np.float32))
        zs = torch.from_numpy(np.concatenate([log_snr, log_snr]).astype(np.float32))
        null = torch.cat([torch.zeros(n), torch.ones(n)])
        with torch.no_grad():
            out = self.net(_features(torch, xs, zs, null)).numpy().astype(np.float64)
        return out[:n], out[n:]


def fidelity(model, mixture, cond_mask, schedule, rng, n=4096, ts=(20, 100, 200, 350, 500, 800)):
    """Relative RMS error of the learned ``eps_cond``, ``eps_uncond`` and ``h`` against the exact
    ones at points ``x_t`` drawn around P(x|y), per t (what SSD's branches see)."""
    cond = mixture.subset(np.asarray(cond_mask, dtype=bool))
    rows = []
    for t in ts:
        a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
        x_t = a * cond.sample(n, rng)[0] + s * rng.standard_normal((n, mixture.dim))
        exact_c, exact_u = mixture.eps_hat_pair(x_t, a, s, cond_mask)
        learned_c, learned_u = model.eps_hat_pair(x_t, a, s)

        def rel(got, want):
            return float(np.sqrt(np.mean((got - want) ** 2)) / max(np.sqrt(np.mean(want**2)), 1e-300))

        rows.append({"t": int(t), "eps_cond": rel(learned_c, exact_c), "eps_uncond": rel(learned_u, exact_u),
                     "h": rel(learned_c - learned_u, exact_c - exact_u)})  # fmt: skip
    return rows


def load_or_train(out, mixture, cond_mask, schedule, settings=DenoiserSettings(), progress=False):
    """The cached network of ``settings`` under ``out``, trained first when missing or stale.

    Returns:
        ``(LearnedDenoiser, info)``; info holds the settings, the training loss and time, and
        whether the cache was used.
    """
    import torch  # noqa: PLC0415

    path = os.path.join(out, CACHE_NAME)
    wanted = dataclasses.asdict(settings) | {"t_range": list(settings.t_range)}
    if os.path.isfile(path):
        try:
            cached = torch.load(path, weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache is retrained
            cached = None
        if cached is not None and cached.get("settings") == wanted:
            return LearnedDenoiser(mixture, cached["state_dict"], settings), cached["info"] | {"cached": True}
    state, info = train(mixture, cond_mask, schedule, settings, progress)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"settings": wanted, "state_dict": state, "info": info}, path + ".tmp")
    os.replace(path + ".tmp", path)  # a killed run leaves no half-written cache
    return LearnedDenoiser(mixture, state, settings), info | {"cached": False}
