"""Figures for the toy experiments (matplotlib, Agg backend; imported only when plotting)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
          "tab:olive", "tab:cyan"]


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
        for s in range(seed_paths.shape[1]):
            ax.plot(seed_paths[:, s, 0], seed_paths[:, s, 1], color=color, lw=0.6, alpha=0.5, label=name if s == 0 else None)
        ax.scatter(seed_paths[-1, :, 0], seed_paths[-1, :, 1], color=color, s=10, zorder=3)
    ax.scatter([0], [0], marker="*", s=250, color="gold", edgecolor="k", zorder=4, label="start [0,0]")
    modes = mixture.means[cond_mask]
    ax.scatter(modes[:, 0], modes[:, 1], marker="*", s=250, color="red", edgecolor="k", zorder=4, label="conditional modes")
    ax.set_aspect("equal")
    ax.set_title("log P(x|y) and trajectories (all seeds)")
    ax.legend(fontsize=7, loc="upper left")
    a, s = float(schedule.alpha(show_t)), float(schedule.sigma(show_t))
    X, Y, logp = _density_grid(mixture, cond_mask, [-0.5, -0.5], [2.5, 1.8], a, s)
    ax2.contourf(X, Y, np.exp(logp), levels=30, cmap="viridis")
    ms = main.names.index("mode-seeking")
    for sd in range(main.path.shape[2]):
        ax2.plot(a * main.path[ms, :, sd, 0], a * main.path[ms, :, sd, 1], color="w", lw=0.5, alpha=0.6)
    ax2.scatter(a * modes[:, 0], a * modes[:, 1], marker="*", s=200, color="red", edgecolor="k", label="induced modes alpha_t o", zorder=5)
    ax2.scatter(transient[:, 0], transient[:, 1], marker="X", s=120, color="orange", edgecolor="k",
                label="transient mode alpha_t o_tr", zorder=5)
    ax2.set_aspect("equal")
    ax2.set_title(f"P(x_t|y) at t={show_t}, mode-seeking path of alpha_t x")
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
