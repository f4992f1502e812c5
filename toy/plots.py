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
# mistaken for h (orange, solid) where their paths overlap; the unscaled ablation, the run that
# reaches a mode, in a colour no other run or marker has.
TRAJECTORY_STYLE = {
    "mode-seeking": ("tab:blue", "-"),
    "mode-disengaging (h)": ("tab:orange", "-"),
    "SDS CFG 7.5": ("tab:green", "-"),
    "SDS CFG 100": ("tab:olive", "-"),
    "SSD": ("black", "--"),
    "SSD unscaled": ("deeppink", "-"),
    "h from trap": ("tab:purple", "-"),
    "ISM": ("tab:brown", "-"),
    "CSD annealed": ("tab:gray", "-."),
    "SDS-Bridge": ("tab:cyan", ":"),
}
# drawn last, on top of the others and in this order: the runs the headline is about
KEY_RUNS = ("mode-disengaging (h)", "SSD M", "SSD unscaled", "mode-seeking")
VIEW_MARGIN = 0.45  # around the start, the conditional modes and the runs that stay near them
FAR = 2.5  # runs whose median end is farther than this from every conditional mode: middle panel only


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


def _key_rank(name):
    """0 for the other runs, then 1, 2, ... in ``KEY_RUNS`` order (the drawing order)."""
    return next((i + 1 for i, k in enumerate(KEY_RUNS) if name.startswith(k)), 0)


def _draw_order(runs):
    """``runs`` with the key runs last (drawn on top), each with its index for the colour."""
    return sorted(enumerate(runs), key=lambda item: _key_rank(item[1][0]))


def _mark_anchors(ax, modes, trap, size=1.0):
    ax.scatter([0], [0], marker="*", s=300 * size, color="gold", edgecolor="k", zorder=7, label="start [0, 0]")
    ax.scatter(modes[:, 0], modes[:, 1], marker="*", s=300 * size, color="red", edgecolor="k", zorder=7,
               label="conditional modes [1, 1], [2, 1]")  # fmt: skip
    ax.scatter([trap[0]], [trap[1]], marker="D", s=110 * size, facecolor="none", edgecolor="k", lw=2, zorder=7,
               label=f"trap [{trap[0]:g}, {trap[1]:g}] (h from trap starts here)")  # fmt: skip


def plot_trajectories(path, mixture, cond_mask, main, trap, schedule, show_t, transient, title="", trap_point=(1.5, 1.0),
                      scores="exact scores"):  # fmt: skip
    """Fig. 7 in three panels. Left: log P(x|y) with every seed's path (thin) and the seeds'
    median path (bold, white-edged; the headline runs drawn on top) of each run that stays
    near the conditional modes. Middle: every run's median path zoomed out, for the runs
    that leave the left view. Right: the exact P(x_t|y) at ``show_t`` with the mode-seeking
    paths of alpha_t x of this run (``scores`` names what gave eps_hat)."""
    import matplotlib.patheffects as pe  # noqa: PLC0415

    fig, (ax, ax_far, ax2) = plt.subplots(1, 3, figsize=(19, 7.4), gridspec_kw={"width_ratios": [1.5, 0.95, 1.05]})
    modes = mixture.means[cond_mask]
    runs = [(n, main.path[i]) for i, n in enumerate(main.names)] + [(trap.names[0], trap.path[0])]
    lo, hi, far = _view(runs, np.concatenate([[[0.0, 0.0]], modes]))
    X, Y, logp = _density_grid(mixture, cond_mask, lo, hi)
    # a light background (darkest grey at about 60 %) so that dark runs stay visible on the modes
    filled = ax.contourf(X, Y, np.maximum(logp, -30), levels=30, cmap="Greys", vmin=-30, vmax=15)
    ax.contour(X, Y, logp, levels=[-8, -4, -2, -1, 0], colors="k", linewidths=0.4, alpha=0.6)
    fig.colorbar(filled, ax=ax, label="log P(x|y) (clipped at -30)", shrink=0.8, pad=0.02)
    outline = [pe.Stroke(linewidth=5, foreground="white"), pe.Normal()]
    for c, (name, seed_paths) in _draw_order(runs):
        color, dash = _style(name, c)
        median = np.median(seed_paths, axis=1)  # the seeds' median path, bold
        z = 4 + _key_rank(name) / 10
        ax_far.plot(median[:, 0], median[:, 1], color=color, ls=dash, lw=2.2, zorder=z, path_effects=outline)
        ax_far.scatter(seed_paths[-1, :, 0], seed_paths[-1, :, 1], color=color, s=10, edgecolor="k", lw=0.3, zorder=z)
        if name in far:
            ax.plot([], [], color=color, ls=dash, lw=2.6, label=f"{name} (leaves this view: middle panel)")
            continue
        ax.plot(seed_paths[:, :, 0], seed_paths[:, :, 1], color=color, ls="-", lw=0.4, alpha=0.15, zorder=2)
        ax.plot(median[:, 0], median[:, 1], color=color, ls=dash, lw=2.6, label=name, zorder=z, path_effects=outline)
        ax.scatter(seed_paths[-1, :, 0], seed_paths[-1, :, 1], color=color, s=14, edgecolor="k", lw=0.3, zorder=z)
    _mark_anchors(ax, modes, trap_point)
    _mark_anchors(ax_far, modes, trap_point, size=0.6)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("x1 (= theta1)", fontsize=11)
    ax.set_ylabel("x2 (= theta2)", fontsize=11)
    ax.set_title("log P(x|y); each seed (thin) and the seeds' median path (bold)", fontsize=11)
    ax_far.add_patch(plt.Rectangle(lo, *(np.asarray(hi) - lo), fill=False, ls="--", lw=1, ec="k", zorder=3))
    ax_far.set_aspect("equal", adjustable="datalim")
    ax_far.set_xlabel("x1", fontsize=11)
    ax_far.set_ylabel("x2", fontsize=11)
    ax_far.set_title("every run's median path, zoomed out\n(dashed box: the left panel's view)", fontsize=11)
    a, s = float(schedule.alpha(show_t)), float(schedule.sigma(show_t))
    X, Y, logp = _density_grid(mixture, cond_mask, [-0.5, -0.5], [2.5, 1.8], a, s)
    filled = ax2.contourf(X, Y, np.exp(logp), levels=30, cmap="viridis")
    fig.colorbar(filled, ax=ax2, label=f"exact P(x_t|y) at t = {show_t}", shrink=0.8, pad=0.02)
    ms = main.names.index("mode-seeking")
    for sd in range(main.path.shape[2]):
        ax2.plot(a * main.path[ms, :, sd, 0], a * main.path[ms, :, sd, 1], color="w", lw=0.5, alpha=0.6)
    ax2.scatter(a * modes[:, 0], a * modes[:, 1], marker="*", s=220, color="red", edgecolor="k",
                label="induced modes alpha_t o", zorder=5)  # fmt: skip
    ax2.scatter(transient[:, 0], transient[:, 1], marker="X", s=130, color="orange", edgecolor="k",
                label="transient mode alpha_t o_tr", zorder=5)  # fmt: skip
    ax2.set_aspect("equal")
    ax2.set_xlabel("x_t,1", fontsize=11)
    ax2.set_ylabel("x_t,2", fontsize=11)
    ax2.set_title(f"the exact P(x_t|y) at t = {show_t}; white: alpha_t x along\nthe mode-seeking paths ({scores})",
                  fontsize=11)  # fmt: skip
    ax2.legend(fontsize=10, loc="lower right")
    handles, labels = ax.get_legend_handles_labels()
    order = [r[0] for r in runs]  # the runs in their own order, then the markers
    ranked = sorted(zip(labels, handles), key=lambda lh: next((i for i, n in enumerate(order) if lh[0].startswith(n)),
                                                               len(order)))  # fmt: skip
    fig.legend([h for _, h in ranked], [lab for lab, _ in ranked], loc="lower center", ncol=4, fontsize=10.5,
               framealpha=0.95)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.15, 1, 0.96 if title else 1))
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
                if r["converged"]:
                    ax.add_patch(plt.Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, ec="lime", lw=3, zorder=3))
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
        n_conv = sum(r["converged"] for r in rows if r["scaled"] == scaled)
        ax.set_title(f"{'SSD (Algorithm 1, rescaled to ||h||)' if scaled else 'SSD unscaled (ablation)'}: "
                     f"{n_conv} of {grid.size} converge", fontsize=11)  # fmt: skip
    axes[0].set_yticks(
        range(len(configs)),
        [f"lr {c[0]:g}, {c[1]} steps, {'annealed t' if c[2] else 'uniform t'}" for c in configs],
        fontsize=9,
    )
    axes[0].set_ylabel("learning rate, run length, timestep schedule", fontsize=10)
    fig.colorbar(im, ax=axes, label="log10 median distance to a conditional mode", shrink=0.8)
    explain = (f"each cell: median distance to the nearest conditional mode over the seeds, and % of seeds within {radius}; "
               f"green box: converged (every seed within {radius})")  # fmt: skip
    # above the panel titles (the axes end at fig.subplotpars.top)
    fig.suptitle(f"{title}\n{explain}" if title else explain, fontsize=11, va="bottom",
                 y=fig.subplotpars.top + 0.35 / fig.get_figheight())  # fmt: skip
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_statistics(path, rows, dim, title="", checks=()):
    """Figs. 16-19 and 9 against t, in a 2 x 3 grid; the sixth panel lists ``checks`` (the
    paper's claims as measured, ``score_statistics.checks``). Fig. 17's axis spans [0, 1.05]
    so that "about 1 at every t" reads as such, with c, what does grow, beside it; Fig. 19
    draws the t where ||h|| is exactly 0 in float64 (log axis) as triangles at the axis floor."""
    col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    t = col["t"]
    fig, grid = plt.subplots(2, 3, figsize=(16, 9.2))
    axes = grid.ravel()
    axes[0].plot(t, col["eps_hat_norm"], lw=2)
    axes[0].set_title(f"Fig. 16: ||eps_hat|| grows with t (d = {dim})")
    axes[0].set_ylabel("mean ||eps_hat(x_t, y)|| over noises")
    axes[1].plot(t, col["correlation"], lw=2, label="corr(eps_hat, eps) (trace form, ref. [25])")
    axes[1].plot(t, col["c"], lw=2, ls="--", color="tab:red", label="c, the regression coefficient (Eq. 8)")
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title(f"Fig. 17: corr is {col['correlation'].min():.3f}-{col['correlation'].max():.3f} at every t;"
                      "\nwhat grows is c")  # fmt: skip
    axes[1].set_ylabel("correlation / coefficient (axis from 0)")
    axes[2].plot(t, col["c"], lw=2, label="optimal c (Eq. 8)")
    axes[2].fill_between(t, col["r_min"], col["r_max"], alpha=0.3, color="tab:orange", label="[min r, max r] (Eq. 6)")
    axes[2].set_title("Fig. 18: c lies within the range of r")
    axes[2].set_ylabel("coefficient of eps")
    h = col["h_norm"]
    positive = h > 0
    floor = 10.0 ** np.floor(np.log10(h[positive].min()) - 1) if positive.any() else 1e-24
    axes[3].semilogy(t, col["eps_hat_norm"], lw=2, label="||eps_hat||")
    axes[3].semilogy(t[positive], h[positive], lw=2, label="||h||")
    if not positive.all():
        axes[3].scatter(t[~positive], np.full((~positive).sum(), floor * 1.6), marker="v", color="tab:orange",
                        label=f"||h|| = 0 in float64 (t <= {t[~positive].max()})", zorder=3)  # fmt: skip
    axes[3].set_ylim(floor, None)
    axes[3].set_title("Fig. 19: ||h|| << ||eps_hat||")
    axes[3].set_ylabel("mean norm over noises (log)")
    axes[4].semilogy(t, col["var_eps_hat"], lw=2, label="eps_hat")
    axes[4].semilogy(t, col["var_minus_eps"], lw=2, label="eps_hat - eps (SDS)")
    axes[4].semilogy(t, col["var_minus_r_eps"], lw=2, ls="--", label="eps_hat - r eps (SSD)")
    axes[4].set_title("Fig. 9: total variance of each residual")
    axes[4].set_ylabel("trace of the covariance (log)")
    for ax in axes[:5]:
        ax.set_xlabel("timestep t")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=10)
    axes[5].axis("off")
    if checks:
        lines = [f"{'holds' if c['holds'] else 'NO   '}  {c['figure']}: {c['claim']}" for c in checks]
        axes[5].text(0, 1, "the paper's claims, measured here:\n\n" + "\n".join(_wrap(line, 58) for line in lines),
                     va="top", ha="left", fontsize=10, family="monospace", transform=axes[5].transAxes)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.96 if title else 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _wrap(line, width):
    import textwrap  # noqa: PLC0415

    return "\n".join(textwrap.wrap(line, width, subsequent_indent=" " * 7))


def plot_digits(path, names, theta, class_means, title=""):
    """A grid: one row per estimator (and the class means), one column per class, a grey scale
    bar; drawn as one mosaic image (90 small axes took seconds on a busy machine)."""
    rows = [("class mean", class_means)] + list(zip(names, theta, strict=True))
    cell, gap = 8, 2
    step = cell + gap
    mosaic = np.full((len(rows) * step - gap, 10 * step - gap), np.nan)
    sat_y, sat_x = [], []
    for i, (_, imgs) in enumerate(rows):
        for c in range(10):
            img = imgs[c].reshape(8, 8)
            mosaic[i * step:i * step + cell, c * step:c * step + cell] = np.clip(img, -1.5, 1.5)
            ys, xs = np.nonzero(np.abs(img) > 1.125)
            sat_y += list(ys + i * step)
            sat_x += list(xs + c * step)
    fig, ax = plt.subplots(figsize=(11.5, 9.2 * mosaic.shape[0] / mosaic.shape[1] + 0.9))  # height: the mosaic's
    cmap = plt.get_cmap("gray_r").with_extremes(bad="white")
    shown = ax.imshow(mosaic, cmap=cmap, vmin=-1.5, vmax=1.5, interpolation="nearest")
    ax.scatter(sat_x, sat_y, s=2, color="red")
    ax.set_xticks([c * step + cell / 2 - 0.5 for c in range(10)], [f"class {c}" for c in range(10)], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([i * step + cell / 2 - 0.5 for i in range(len(rows))], [name for name, _ in rows], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.colorbar(shown, ax=ax, label="pixel value (data range [-1, 1]; shown clipped to [-1.5, 1.5])",
                 shrink=0.6, pad=0.02)  # fmt: skip
    fig.suptitle(title or "digits", fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
