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

# Fig. 7's runs: colour and line style. The paper's colours where it names them (yellow start,
# red conditional modes, purple for h started at the trap); SSD dashed black so it cannot be
# mistaken for h (orange, solid) when their paths overlap.
TRAJECTORY_STYLE = {
    "mode-seeking": ("tab:blue", "-"),
    "mode-disengaging (h)": ("tab:orange", "-"),
    "SDS CFG 7.5": ("tab:green", "-"),
    "SDS CFG 100": ("tab:olive", "-"),
    "SSD": ("black", "--"),
    "SSD unscaled": ("tab:brown", "-."),
    "h from trap": ("tab:purple", "-"),
    "ISM": ("tab:pink", "-"),
    "CSD annealed": ("tab:gray", ":"),
    "SDS-Bridge": ("tab:cyan", ":"),
}
VIEW_MARGIN = 0.6  # around the start, the conditional modes and the runs that stay near them
FAR = 2.5  # runs whose median end is farther than this from every conditional mode are clipped


def _style(name, index):
    for prefix in sorted(TRAJECTORY_STYLE, key=len, reverse=True):  # "SSD unscaled" before "SSD"
        if name.startswith(prefix):
            return TRAJECTORY_STYLE[prefix]
    return COLORS[index % len(COLORS)], ":"


def _density_grid(mixture, mask, lo, hi, alpha=1.0, sigma=0.0, n=200):
    xs, ys = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    X, Y = np.meshgrid(xs, ys)
    logp = mixture.log_prob(np.stack([X.ravel(), Y.ravel()], 1), alpha, sigma, mask).reshape(X.shape)
    return X, Y, logp


def _view(runs, anchors):
    """Limits holding ``anchors`` and every run whose median end is near a conditional mode;
    returns ``(lo, hi, far_runs)``."""
    modes = anchors[1:]
    near_pts, far = [anchors], []
    for name, paths in runs:
        end = np.median(paths[-1], axis=0)
        if np.min(np.linalg.norm(modes - end, axis=1)) > FAR:
            far.append(name)
        else:
            near_pts.append(paths.reshape(-1, 2))
    pts = np.concatenate(near_pts)
    return pts.min(0) - VIEW_MARGIN, pts.max(0) + VIEW_MARGIN, far


def _mark_clipped(ax, name, median, lo, hi, color, slot=0):
    """An arrow where ``median`` leaves the view, labelled with where it ends; the labels
    stack in the lower right (``slot``: the run's place in the stack)."""
    inside = np.all((median >= lo) & (median <= hi), axis=1)
    last = int(np.nonzero(inside)[0].max()) if inside.any() else 0
    head = np.clip(median[min(last + 1, len(median) - 1)], lo, hi)
    end = median[-1]
    ax.annotate(f"{name} leaves the view\nand ends at ({end[0]:.1f}, {end[1]:.1f})", xy=head, xytext=(0.97, 0.36 - 0.1 * slot),
                textcoords="axes fraction", ha="right", va="top", fontsize=8.5, zorder=6,
                bbox=dict(boxstyle="round", fc="white", ec=color, alpha=0.9),
                arrowprops=dict(arrowstyle="-|>", color=color, lw=1.8))  # fmt: skip


def plot_trajectories(path, mixture, cond_mask, main, trap, schedule, show_t, transient, title=""):
    """Fig. 7: left, log P(x|y) with every seed's path (thin) and the median path (bold);
    right, P(x_t|y) at ``show_t`` with the mode-seeking path of alpha_t x. Runs that leave
    the mode region are clipped at its edge with an arrow saying where they end."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 6.2), gridspec_kw={"width_ratios": [1.45, 1]})
    modes = mixture.means[cond_mask]
    runs = [(n, main.path[i]) for i, n in enumerate(main.names)] + [(trap.names[0], trap.path[0])]
    lo, hi, far = _view(runs, np.concatenate([[[0.0, 0.0]], modes]))
    X, Y, logp = _density_grid(mixture, cond_mask, lo, hi)
    filled = ax.contourf(X, Y, np.maximum(logp, -30), levels=30, cmap="Greys")
    ax.contour(X, Y, logp, levels=[-8, -4, -2, -1, 0], colors="k", linewidths=0.4)
    fig.colorbar(filled, ax=ax, label="log P(x|y) (clipped at -30)", shrink=0.85, pad=0.02)
    for c, (name, seed_paths) in enumerate(runs):
        color, dash = _style(name, c)
        ax.plot(seed_paths[:, :, 0], seed_paths[:, :, 1], color=color, ls=dash, lw=0.4, alpha=0.3)
        median = np.median(seed_paths, axis=1)  # the seeds' median path, bold
        ax.plot(median[:, 0], median[:, 1], color=color, ls=dash, lw=2.4, label=name, zorder=4)
        ax.scatter(seed_paths[-1, :, 0], seed_paths[-1, :, 1], color=color, s=12, edgecolor="k", lw=0.3, zorder=4)
        if name in far:
            _mark_clipped(ax, name, median, lo, hi, color, slot=far.index(name))
    ax.scatter([0], [0], marker="*", s=280, color="gold", edgecolor="k", zorder=5, label="start [0, 0]")
    ax.scatter(modes[:, 0], modes[:, 1], marker="*", s=280, color="red", edgecolor="k", zorder=5,
               label="conditional modes")  # fmt: skip
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("x1 (= theta1)")
    ax.set_ylabel("x2 (= theta2)")
    ax.set_title("log P(x|y); every seed (thin) and the seeds' median path (bold)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    a, s = float(schedule.alpha(show_t)), float(schedule.sigma(show_t))
    X, Y, logp = _density_grid(mixture, cond_mask, [-0.5, -0.5], [2.5, 1.8], a, s)
    filled = ax2.contourf(X, Y, np.exp(logp), levels=30, cmap="viridis")
    fig.colorbar(filled, ax=ax2, label=f"P(x_t|y) at t = {show_t}", shrink=0.85, pad=0.02)
    ms = main.names.index("mode-seeking")
    for sd in range(main.path.shape[2]):
        ax2.plot(a * main.path[ms, :, sd, 0], a * main.path[ms, :, sd, 1], color="w", lw=0.5, alpha=0.6)
    ax2.scatter(a * modes[:, 0], a * modes[:, 1], marker="*", s=220, color="red", edgecolor="k",
                label="induced modes alpha_t o", zorder=5)  # fmt: skip
    ax2.scatter(transient[:, 0], transient[:, 1], marker="X", s=130, color="orange", edgecolor="k",
                label="transient mode alpha_t o_tr", zorder=5)  # fmt: skip
    ax2.set_aspect("equal")
    ax2.set_xlabel("x_t,1")
    ax2.set_ylabel("x_t,2")
    ax2.set_title(f"P(x_t|y) at t = {show_t}; white: mode-seeking paths of alpha_t x", fontsize=10)
    ax2.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96 if title else 1))
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_sweep(path, rows, Ms, radius, title=""):
    """Heatmaps of the median distance to the nearest conditional mode: config rows x M."""
    configs = sorted({(r["lr"], r["steps"], r["anneal"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.2 * len(Ms) * 2, 0.62 * len(configs) + 2.6), sharey=True)
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
                fontsize=9,
                color="w" if grid[i, j] > 0.5 else "k",
            )
        ax.set_xticks(range(len(Ms)), [f"{m:g}" for m in Ms], fontsize=10)
        ax.set_xlabel("SSD threshold M", fontsize=10)
        ax.set_title("SSD (Algorithm 1, rescaled to ||h||)" if scaled else "SSD unscaled (ablation)", fontsize=11)
    axes[0].set_yticks(
        range(len(configs)),
        [f"lr {c[0]:g}, {c[1]} steps, {'annealed t' if c[2] else 'uniform t'}" for c in configs],
        fontsize=9,
    )
    axes[0].set_ylabel("learning rate, run length, timestep schedule", fontsize=10)
    fig.colorbar(im, ax=axes, label="log10 median distance to a conditional mode", shrink=0.8)
    explain = f"each cell: median distance to the nearest conditional mode over the seeds, and % of seeds within {radius}"
    # above the panel titles (the axes end at fig.subplotpars.top)
    fig.suptitle(f"{title}\n{explain}" if title else explain, fontsize=11, va="bottom",
                 y=fig.subplotpars.top + 0.35 / fig.get_figheight())  # fmt: skip
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_statistics(path, rows, dim, title=""):
    """Figs. 16-19 and 9 in one figure, against t."""
    col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    t = col["t"]
    fig, axes = plt.subplots(1, 5, figsize=(21, 4.3))
    axes[0].plot(t, col["eps_hat_norm"])
    axes[0].set_title(f"Fig. 16: ||eps_hat|| (d = {dim})")
    axes[0].set_ylabel("mean ||eps_hat(x_t, y)|| over noises")
    axes[1].plot(t, col["correlation"])
    axes[1].set_title("Fig. 17: linear corr(eps_hat, eps)")
    axes[1].set_ylabel("correlation (trace form, ref. [25])")
    axes[2].plot(t, col["c"], label="optimal c (Eq. 8)")
    axes[2].fill_between(t, col["r_min"], col["r_max"], alpha=0.3, color="tab:orange", label="[min r, max r] (Eq. 6)")
    axes[2].set_title("Fig. 18: c against the range of r")
    axes[2].set_ylabel("coefficient of eps")
    axes[2].legend(fontsize=7)
    axes[3].semilogy(t, col["eps_hat_norm"], label="||eps_hat||")
    axes[3].semilogy(t, col["h_norm"], label="||h||")
    axes[3].set_title("Fig. 19: norms")
    axes[3].set_ylabel("mean norm over noises (log)")
    axes[3].legend(fontsize=7)
    axes[4].semilogy(t, col["var_eps_hat"], label="eps_hat")
    axes[4].semilogy(t, col["var_minus_eps"], label="eps_hat - eps (SDS)")
    axes[4].semilogy(t, col["var_minus_r_eps"], label="eps_hat - r eps (SSD)")
    axes[4].set_title("Fig. 9: total variance")
    axes[4].set_ylabel("trace of the covariance (log)")
    axes[4].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("timestep t")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.93 if title else 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_digits(path, names, theta, class_means, title=""):
    """A grid: one row per estimator (and the class means), one column per class, a grey scale bar."""
    rows = [("class mean", class_means)] + list(zip(names, theta, strict=True))
    fig, axes = plt.subplots(len(rows), 10, figsize=(11.5, 1.05 * len(rows) + 0.6))
    for i, (name, imgs) in enumerate(rows):
        for c in range(10):
            ax = axes[i, c]
            shown = ax.imshow(np.clip(imgs[c].reshape(8, 8), -1.5, 1.5), cmap="gray_r", vmin=-1.5, vmax=1.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if np.any(np.abs(imgs[c]) > 1.125):
                sat = np.abs(imgs[c].reshape(8, 8)) > 1.125
                ys, xs = np.nonzero(sat)
                ax.scatter(xs, ys, s=2, color="red")
            if i == 0:
                ax.set_title(f"class {c}", fontsize=8)
        axes[i, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.colorbar(shown, ax=axes, label="pixel value (data range [-1, 1]; shown clipped to [-1.5, 1.5])",
                 shrink=0.6, pad=0.02)  # fmt: skip
    fig.suptitle(title or "digits", fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
