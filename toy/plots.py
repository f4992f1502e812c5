"""Figures for the toy experiments (matplotlib, Agg backend; imported only when plotting)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = [
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
]


def _density_grid(mixture, mask, lo, hi, alpha=1.0, sigma=0.0, n=200):
    xs, ys = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    X, Y = np.meshgrid(xs, ys)
    logp = mixture.log_prob(np.stack([X.ravel(), Y.ravel()], 1), alpha, sigma, mask).reshape(X.shape)
    return X, Y, logp


def plot_trajectories(path, mixture, cond_mask, main, trap, schedule, show_t, transient):
    """Fig. 7: left, log P(x|y) contours with every seed's path; right, P(x_t|y) at ``show_t``
    with the mode-seeking path of alpha_t x."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1.5, 1]})
    pts = np.concatenate([main.path.reshape(-1, 2), trap.path.reshape(-1, 2)])
    lo = np.minimum(pts.min(0), [-0.7, -0.7]) - 0.3
    hi = np.maximum(pts.max(0), [2.7, 1.7]) + 0.3
    X, Y, logp = _density_grid(mixture, cond_mask, lo, hi)
    ax.contourf(X, Y, np.maximum(logp, -30), levels=30, cmap="Greys")
    ax.contour(X, Y, logp, levels=[-8, -4, -2, -1, 0], colors="k", linewidths=0.4)
    runs = [(n, main.path[i]) for i, n in enumerate(main.names)] + [(trap.names[0], trap.path[0])]
    for c, (name, seed_paths) in enumerate(runs):
        color = COLORS[c % len(COLORS)]
        ax.plot(seed_paths[:, :, 0], seed_paths[:, :, 1], color=color, lw=0.4, alpha=0.35)
        median = np.median(seed_paths, axis=1)  # the seeds' median path, bold
        ax.plot(median[:, 0], median[:, 1], color=color, lw=2.0, label=name, zorder=3)
        ax.scatter(seed_paths[-1, :, 0], seed_paths[-1, :, 1], color=color, s=10, edgecolor="k", lw=0.3, zorder=3)
    ax.scatter([0], [0], marker="*", s=250, color="gold", edgecolor="k", zorder=4, label="start [0,0]")
    modes = mixture.means[cond_mask]
    ax.scatter(
        modes[:, 0], modes[:, 1], marker="*", s=250, color="red", edgecolor="k", zorder=4, label="conditional modes"
    )
    ax.set_aspect("equal")
    ax.set_title("log P(x|y); every seed (thin) and the median path (bold)")
    ax.legend(fontsize=7, loc="upper left")
    a, s = float(schedule.alpha(show_t)), float(schedule.sigma(show_t))
    X, Y, logp = _density_grid(mixture, cond_mask, [-0.5, -0.5], [2.5, 1.8], a, s)
    ax2.contourf(X, Y, np.exp(logp), levels=30, cmap="viridis")
    ms = main.names.index("mode-seeking")
    for sd in range(main.path.shape[2]):
        ax2.plot(a * main.path[ms, :, sd, 0], a * main.path[ms, :, sd, 1], color="w", lw=0.5, alpha=0.6)
    ax2.scatter(
        a * modes[:, 0],
        a * modes[:, 1],
        marker="*",
        s=200,
        color="red",
        edgecolor="k",
        label="induced modes alpha_t o",
        zorder=5,
    )
    ax2.scatter(
        transient[:, 0],
        transient[:, 1],
        marker="X",
        s=120,
        color="orange",
        edgecolor="k",
        label="transient mode alpha_t o_tr",
        zorder=5,
    )
    ax2.set_aspect("equal")
    ax2.set_title(f"P(x_t|y) at t={show_t}, mode-seeking path of alpha_t x")
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_sweep(path, rows, Ms, radius):
    """Heatmaps of the median distance to the nearest conditional mode: config rows x M."""
    configs = sorted({(r["lr"], r["steps"], r["anneal"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(configs) + 2), sharey=True)
    for ax, scaled in zip(axes, (True, False), strict=True):
        grid = np.full((len(configs), len(Ms)), np.nan)
        frac = np.zeros_like(grid)
        for r in rows:
            if r["scaled"] == scaled:
                i, j = configs.index((r["lr"], r["steps"], r["anneal"])), list(Ms).index(r["M"])
                grid[i, j], frac[i, j] = r["dist_median"], r["frac_converged"]
        im = ax.imshow(np.log10(grid), cmap="magma_r", vmin=-2, vmax=1, aspect="auto")
        for i, j in np.ndindex(grid.shape):
            ax.text(
                j,
                i,
                f"{grid[i, j]:.2f}\n{frac[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=6,
                color="w" if grid[i, j] > 0.5 else "k",
            )
        ax.set_xticks(range(len(Ms)), [str(m) for m in Ms])
        ax.set_xlabel("M")
        ax.set_title(
            ("SSD (Algorithm 1, rescaled to ||h||)" if scaled else "SSD unscaled (ablation)")
            + f"\nmedian dist. to cond. mode; % seeds < {radius}",
            fontsize=9,
        )
    axes[0].set_yticks(
        range(len(configs)),
        [f"lr {c[0]:g}, {c[1]} steps, {'anneal' if c[2] else 'uniform'}" for c in configs],
        fontsize=7,
    )
    fig.colorbar(im, ax=axes, label="log10 median distance", shrink=0.8)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_statistics(path, rows, dim):
    """Figs. 16-19 and 9 in one figure, against t."""
    col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    t = col["t"]
    fig, axes = plt.subplots(1, 5, figsize=(20, 3.8))
    axes[0].plot(t, col["eps_hat_norm"])
    axes[0].set_title(f"Fig. 16: ||eps_hat|| (d = {dim})")
    axes[1].plot(t, col["correlation"])
    axes[1].set_title("Fig. 17: linear corr(eps_hat, eps)")
    axes[2].plot(t, col["c"], label="optimal c (Eq. 8)")
    axes[2].fill_between(t, col["r_min"], col["r_max"], alpha=0.3, color="tab:orange", label="[min r, max r] (Eq. 6)")
    axes[2].set_title("Fig. 18: c against the range of r")
    axes[2].legend(fontsize=7)
    axes[3].semilogy(t, col["eps_hat_norm"], label="||eps_hat||")
    axes[3].semilogy(t, col["h_norm"], label="||h||")
    axes[3].set_title("Fig. 19: norms")
    axes[3].legend(fontsize=7)
    axes[4].semilogy(t, col["var_eps_hat"], label="eps_hat")
    axes[4].semilogy(t, col["var_minus_eps"], label="eps_hat - eps (SDS)")
    axes[4].semilogy(t, col["var_minus_r_eps"], label="eps_hat - r eps (SSD)")
    axes[4].set_title("Fig. 9: total variance")
    axes[4].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("t")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_digits(path, names, theta, class_means):
    """A grid: one row per estimator (and the class means), one column per class."""
    rows = [("class mean", class_means)] + list(zip(names, theta, strict=True))
    fig, axes = plt.subplots(len(rows), 10, figsize=(10, 1.05 * len(rows)))
    for i, (name, imgs) in enumerate(rows):
        for c in range(10):
            ax = axes[i, c]
            ax.imshow(np.clip(imgs[c].reshape(8, 8), -1.5, 1.5), cmap="gray_r", vmin=-1.5, vmax=1.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if np.any(np.abs(imgs[c]) > 1.125):
                sat = np.abs(imgs[c].reshape(8, 8)) > 1.125
                ys, xs = np.nonzero(sat)
                ax.scatter(xs, ys, s=2, color="red")
        axes[i, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(
        "digits: one image per class from gray (red dots: pixels more than one grey level outside [-1, 1])", fontsize=9
    )
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
