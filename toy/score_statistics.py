"""Experiment 3 (Sec. 11, Figs. 16-19, Fig. 9): the estimator's statistics against t.

A 64-d mixture stands in for the image distribution; x is one draw from a conditional
component (standing in for an SDS rendering). For each t, ``noises`` noises give
``noises`` points x_t, where the exact eps_hat (cond and uncond) is evaluated; the
per-noise numbers come from one ``ssd_toolkit.estimate(..., return_stats=True)`` call
(r of Eq. 6, ||h||, ||eps_hat||, ||eps_tilde||), c from ``ssd_toolkit.optimal_coefficient``
(Eq. 8), eps_tilde from ``ssd_toolkit.variance_reduced`` (Eq. 7).

The linear correlation of Fig. 17 is Puccetti's trace form (the paper's ref. [25]):
``tr Cov(eps_hat, eps) / sqrt(tr Cov(eps_hat) tr Cov(eps))``. Variances are total variances
(traces of covariance matrices, Sec. 8).
"""

from __future__ import annotations

import os
import time

import numpy as np

import ssd_toolkit

from .mixture import GaussianMixture
from .report import markdown_table, write_json, write_markdown


def statistics_mixture(dim=64, components=8, cond_components=3, variance=0.05, seed=0):
    """A ``dim``-d mixture with means uniform in [-1, 1]^dim (image-like pixel range) and equal
    weights; the first ``cond_components`` are the conditional ones. Returns ``(mixture, mask)``."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-1.0, 1.0, size=(components, dim))
    mask = np.arange(components) < cond_components
    return GaussianMixture(np.ones(components), means, variance), mask


def _centered(a):
    return a - a.mean(0)


def _total_cov(a_c, b_c):
    """``tr Cov(a, b)`` from the centred samples ``a_c``, ``b_c`` ``[n, d]`` (one dot product)."""
    return float(np.vdot(a_c, b_c) / (a_c.shape[0] - 1))


def _spearman(x, y):
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def statistics_at(mixture, mask, x, t, schedule, noises, rng):
    """All Sec. 11 numbers at one ``(x, t)`` from ``noises`` draws of the noise."""
    noise = rng.standard_normal((noises, mixture.dim))
    a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
    eps_c, eps_u = mixture.eps_hat_pair(a * x[None] + s * noise, a, s, mask)
    _, st = ssd_toolkit.estimate(
        eps_c, eps_u, noise, np.full(noises, float(t)), M=float(schedule.num_timesteps), return_stats=True
    )
    c = ssd_toolkit.optimal_coefficient(eps_c, noise)
    eps_tilde = _centered(ssd_toolkit.variance_reduced(eps_c, noise))
    # the residuals eps_hat - k eps are linear in (eps_hat, eps): centred once, then combined
    eps_c, noise = _centered(eps_c), _centered(noise)
    var_eps = _total_cov(eps_c, eps_c)
    minus_eps, minus_c_eps = eps_c - noise, eps_c - c * noise
    return dict(
        t=int(t),
        eps_hat_norm=float(st["eps_cond_norm"].mean()),
        h_norm=float(st["h_norm"].mean()),
        correlation=_total_cov(eps_c, noise) / np.sqrt(var_eps * _total_cov(noise, noise)),
        c=c,
        r_min=float(st["r"].min()),
        r_max=float(st["r"].max()),
        r_mean=float(st["r"].mean()),
        var_eps_hat=var_eps,
        var_minus_eps=_total_cov(minus_eps, minus_eps),
        var_minus_r_eps=_total_cov(eps_tilde, eps_tilde),
        var_minus_c_eps=_total_cov(minus_c_eps, minus_c_eps),
    )


def checks(rows):
    """The paper's claims, measured: each a dict with the claim, the number and whether it holds."""
    col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    t = col["t"]
    inside = (col["r_min"] <= col["c"]) & (col["c"] <= col["r_max"])
    i500 = int(np.argmin(np.abs(t - 500)))
    ratio = col["h_norm"] / col["eps_hat_norm"]
    sds_worse = col["var_minus_eps"] > col["var_eps_hat"]
    crossover = int(t[sds_worse].max()) if sds_worse.any() else 0
    ssd_vs_sds = col["var_minus_r_eps"] / col["var_minus_eps"]
    rho_norm, rho_corr, rho_c = (_spearman(t, col[k]) for k in ("eps_hat_norm", "correlation", "c"))
    large = ssd_vs_sds[t >= 500]
    return [
        dict(
            figure="Fig. 16",
            claim="||eps_hat|| increases with t",
            measure="Spearman(t, ||eps_hat||)",
            value=rho_norm,
            holds=rho_norm > 0.9,
        ),
        dict(
            figure="Fig. 17",
            claim="corr(eps_hat, eps) increases with t",
            measure=f"Spearman(t, corr); corr in [{col['correlation'].min():.3f}, {col['correlation'].max():.3f}]",
            value=rho_corr,
            holds=rho_corr > 0.9,
        ),
        dict(
            figure="(Fig. 17)",
            claim="what does increase: the regression coefficient c of eps_hat on eps",
            measure=f"Spearman(t, c); c from {col['c'][0]:.3f} to {col['c'][-1]:.3f}",
            value=rho_c,
            holds=rho_c > 0.9,
        ),
        dict(
            figure="Fig. 18",
            claim="c lies within [min r, max r]",
            measure="fraction of t with min r <= c <= max r",
            value=float(inside.mean()),
            holds=bool(inside.all()),
        ),
        dict(
            figure="Fig. 19",
            claim="||h|| << ||eps_hat||",
            measure="max over t of ||h|| / ||eps_hat||",
            value=float(ratio.max()),
            holds=float(ratio.max()) < 0.1,
        ),
        dict(
            figure="Fig. 9",
            claim="eps_hat - eps does not reduce variance at small t",
            measure="largest t with var(eps_hat - eps) > var(eps_hat)",
            value=crossover,
            holds=crossover >= 20,
        ),
        dict(
            figure="Fig. 9",
            claim="eps_hat - r eps has much lower variance than eps_hat - eps at small t",
            measure="max over t <= 200 of var(eps_hat - r eps) / var(eps_hat - eps)",
            value=float(ssd_vs_sds[t <= 200].max()),
            holds=float(ssd_vs_sds[t <= 200].max()) < 0.5,
        ),
        dict(
            figure="Fig. 9",
            claim="at large t both reductions perform alike",
            measure=f"var(eps_hat - r eps) / var(eps_hat - eps) over t >= 500: [{large.min():.2f}, {large.max():.2f}]",
            value=float(large.max()),
            holds=bool(large.min() > 0.5 and large.max() < 2.0),
        ),
        dict(
            figure="Fig. 9",
            claim="c is close to 1 at t = 500",
            measure=f"c at t = {int(t[i500])}",
            value=float(col["c"][i500]),
            holds=abs(float(col["c"][i500]) - 1.0) < 0.1,
        ),
    ]


def run(out="toy_out", seed=0, dim=64, noises=8192, num_t=40, progress=True):
    """Run the statistics, write ``statistics.{png,json,md}`` under ``out``; return the summary."""
    from .plots import plot_statistics  # noqa: PLC0415

    start = time.perf_counter()
    mixture, mask = statistics_mixture(dim=dim, seed=seed)
    schedule = ssd_toolkit.stable_diffusion_schedule()
    rng = np.random.default_rng(seed + 1)
    x = mixture.subset(mask).sample(1, rng)[0][0]
    ts = np.unique(np.rint(np.linspace(1, schedule.num_timesteps - 1, num_t)).astype(int))
    if progress:
        from .progress import bar  # noqa: PLC0415

        ts = bar(ts, "statistics")
    rows = [statistics_at(mixture, mask, x, t, schedule, noises, rng) for t in ts]
    found = checks(rows)
    seconds = time.perf_counter() - start
    os.makedirs(out, exist_ok=True)
    png = os.path.join(out, "statistics.png")
    title = (f"Sec. 11 statistics: {dim}-d mixture (8 components, 3 conditional), {noises} noises per t, "
             f"{len(rows)} timesteps in [1, 999], seed {seed}")  # fmt: skip
    plot_statistics(png, rows, dim, title, found)
    summary = {
        "config": dict(
            dim=dim,
            components=8,
            cond_components=3,
            variance=0.05,
            noises=noises,
            num_t=num_t,
            seed=seed,
            x="one draw from the conditional mixture",
        ),
        "seconds": seconds,
        "checks": found,
        "rows": rows,
    }
    write_json(os.path.join(out, "statistics.json"), summary)
    write_markdown(
        os.path.join(out, "statistics.md"),
        "Sec. 11 statistics (Figs. 16-19, 9)",
        [
            f"{dim}-d mixture (8 components, 3 conditional, variance 0.05, means uniform in [-1, 1]), {noises} noises "
            f"per t, {len(rows)} timesteps in [1, 999]; {seconds:.1f} s.",
            markdown_table(
                ["figure", "paper's claim", "measure", "value", "holds here"],
                [(c["figure"], c["claim"], c["measure"], c["value"], "yes" if c["holds"] else "no") for c in found],
            ),
            markdown_table(
                [
                    "t",
                    "||eps_hat||",
                    "||h||",
                    "corr",
                    "c",
                    "min r",
                    "max r",
                    "var eps_hat",
                    "var eps_hat-eps",
                    "var eps_hat-r eps",
                ],
                [
                    (
                        r["t"],
                        r["eps_hat_norm"],
                        r["h_norm"],
                        r["correlation"],
                        r["c"],
                        r["r_min"],
                        r["r_max"],
                        r["var_eps_hat"],
                        r["var_minus_eps"],
                        r["var_minus_r_eps"],
                    )
                    for r in rows[:: max(1, len(rows) // 10)]
                ],
            ),
            f"![statistics]({os.path.basename(png)})",
        ],
    )
    return summary
