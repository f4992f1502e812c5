"""Why Algorithm 1 leaves the mode: the expected update along the ray through a mode.

On the ray from [0, 0] through the conditional mode [2, 1], at each t of a grid and each point
``theta = lam * [2, 1]``, the expected update per unit learning rate (Eq. 3 with w = 1) is
``-E_eps[E(x_t)]``; its component along the ray (outward > 0) is averaged over ``noises``
common noises. The t > M branch (``h``) pushes outward; the t <= M branch pulls inward, and
Algorithm 1 rescales that pull to ``||h||`` (line 15), which near the modes vanishes at small
t. The net drift with t uniform on the grid says where each estimator settles on the ray:
where it crosses 0 from above. Every term is the package's estimator
(``csd`` for ``h``; ``ssd`` / ``ssd-no-rescale`` with ``M`` above every t for the pull).
"""

from __future__ import annotations

import os
import time

import numpy as np

import ssd_toolkit

from .mixture import paper_mixture
from .report import markdown_table, write_json, write_markdown

MODE = (2.0, 1.0)
T_GRID = np.arange(20, 981, 10)  # the Fig. 7 runs' t range, [20, 980]
LAMBDAS = np.round(np.linspace(0.5, 1.6, 23), 6)  # theta = lam * MODE; lam = 1 is the mode
REPORT_T = (20, 50, 100, 200, 300, 500, 800, 980)


def drift_along_ray(M=200.0, noises=128, seed=0, ts=T_GRID, lambdas=LAMBDAS):
    """Per ``(t, lam)`` the mean outward component of ``-h``, of Algorithm 1's rescaled pull and
    of the unscaled pull ``-(eps_cond - r eps)``, and the mean ``||h||``; arrays ``[T, L]``."""
    mixture, cond = paper_mixture()
    schedule = ssd_toolkit.stable_diffusion_schedule()
    mode = np.asarray(MODE)
    ray = mode / np.linalg.norm(mode)
    rng = np.random.default_rng(seed)
    half = rng.standard_normal((noises // 2 + noises % 2, 2))
    noise = np.concatenate([half, -half])[:noises]  # antithetic pairs: smoother curves, no bias
    theta = lambdas[:, None] * mode  # [L, 2]
    n = np.broadcast_to(noise[None], (len(lambdas), noises, 2)).reshape(-1, 2)
    above = max(float(ts.max()) + 1.0, float(schedule.num_timesteps))  # every t on the t <= M branch
    h_est = ssd_toolkit.get_estimator("csd")
    pull_est = ssd_toolkit.get_estimator("ssd", M=above)
    raw_est = ssd_toolkit.get_estimator("ssd-no-rescale", M=above)
    out = {k: np.empty((len(ts), len(lambdas))) for k in ("push", "pull", "pull_unscaled", "h_norm")}
    for i, t in enumerate(ts):
        a, s = float(schedule.alpha(int(t))), float(schedule.sigma(int(t)))
        x_t = (a * theta[:, None, :] + s * noise[None]).reshape(-1, 2)
        c, u = mixture.eps_hat_pair(x_t, a, s, cond)
        tt = np.full(len(x_t), int(t))
        for key, est in (("push", h_est), ("pull", pull_est), ("pull_unscaled", raw_est)):
            out[key][i] = -(est(c, u, n, tt) @ ray).reshape(len(lambdas), noises).mean(1)
        out["h_norm"][i] = np.linalg.norm(c - u, axis=1).reshape(len(lambdas), noises).mean(1)
    return out


def net_drift(d, ts, M):
    """Mean outward drift over the t grid per unit lr, ``[L]``: Algorithm 1, without line 15, h alone."""
    above = (ts > M)[:, None]
    return {
        "SSD (Algorithm 1)": np.where(above, d["push"], d["pull"]).mean(0),
        "SSD without line 15": np.where(above, d["push"], d["pull_unscaled"]).mean(0),
        "h alone": d["push"].mean(0),
    }


def settles(lambdas, drift):
    """The ``lam`` where ``drift`` crosses 0 from above (a stable point on the ray), or None."""
    down = np.flatnonzero((drift[:-1] > 0) & (drift[1:] <= 0))
    if not down.size:
        return None
    i = down[0]
    return float(lambdas[i] + (lambdas[i + 1] - lambdas[i]) * drift[i] / (drift[i] - drift[i + 1]))


def run(out="toy_out", seed=0, M=200.0, noises=128, progress=True):
    """Compute the drift along the ray through [2, 1]; write ``drift.{png,json,md}``."""
    from .plots import plot_drift  # noqa: PLC0415

    start = time.perf_counter()
    d = drift_along_ray(M, noises, seed)
    nets = net_drift(d, T_GRID, M)
    at = int(np.argmin(np.abs(LAMBDAS - 1.0)))  # the mode itself
    above = T_GRID > M
    share = float(above.mean())
    at_mode = {
        "push_per_step": float(d["push"][above, at].sum() / len(T_GRID)),  # t > M steps' share included
        "pull_per_step": float(d["pull"][~above, at].sum() / len(T_GRID)),
        "pull_unscaled_per_step": float(d["pull_unscaled"][~above, at].sum() / len(T_GRID)),
        "share_of_steps_t_above_M": share,
        "h_norm": {int(t): float(d["h_norm"][list(T_GRID).index(t), at]) for t in REPORT_T},
    }
    stable = {name: settles(LAMBDAS, v) for name, v in nets.items()}
    os.makedirs(out, exist_ok=True)
    png = os.path.join(out, "drift.png")
    plot_drift(png, T_GRID, LAMBDAS, d, nets, M, at, MODE, noises, at_mode, stable)
    seconds = time.perf_counter() - start
    summary = {
        "config": dict(M=M, noises=noises, seed=seed, mode=list(MODE), t_grid=[int(T_GRID[0]), int(T_GRID[-1]), 10],
                       lambdas=[float(LAMBDAS[0]), float(LAMBDAS[-1]), len(LAMBDAS)]),  # fmt: skip
        "seconds": seconds,
        "at_mode": at_mode,
        "settles_at_lambda": stable,
        "per_t_at_mode": [{"t": int(t), "push": float(d["push"][i, at]), "pull": float(d["pull"][i, at]),
                           "pull_unscaled": float(d["pull_unscaled"][i, at]), "h_norm": float(d["h_norm"][i, at])}
                          for i, t in enumerate(T_GRID)],  # fmt: skip
        "net_drift": {name: v for name, v in nets.items()},
        "lambdas": LAMBDAS,
    }
    write_json(os.path.join(out, "drift.json"), summary)
    rows = [(t, v["push"], v["pull"], v["pull_unscaled"], v["h_norm"])
            for v in summary["per_t_at_mode"] for t in [v["t"]] if t in REPORT_T]  # fmt: skip
    write_markdown(
        os.path.join(out, "drift.md"),
        "Why Algorithm 1 leaves the mode: the expected update along the ray through [2, 1]",
        [
            f"Per unit learning rate and step, w(t) = 1, t on [20, 980] (grid of 10), M = {M:g}, {noises} noises; "
            f"{seconds:.1f} s. At the mode: the t > M branch pushes outward {at_mode['push_per_step']:.3g} "
            f"({share:.0%} of the steps); the t <= M branch pulls {at_mode['pull_per_step']:.3g} rescaled to ||h|| "
            f"(Algorithm 1), {at_mode['pull_unscaled_per_step']:.3g} without line 15.",
            "Where the net drift along the ray crosses 0 (theta = lam [2, 1]): "
            + "; ".join(f"{k}: {f'none in [{LAMBDAS[0]:g}, {LAMBDAS[-1]:g}]' if v is None else f'lam = {v:.2f}'}"
                        for k, v in stable.items()),  # fmt: skip
            markdown_table(["t", "push (-h, outward)", "pull, Algorithm 1", "pull, without line 15", "||h||"], rows),
            f"![drift]({os.path.basename(png)})",
        ],
    )
    return summary
