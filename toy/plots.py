"""Figures for the toy experiments (matplotlib, Agg backend; imported only when plotting)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
          "tab:olive", "tab:cyan"]  # fmt: skip

# Fig. 7's runs: colour and line style. The paper's colours where it names them (yellow start,
# red conditional modes, purple for h started at the trap); SSD dashed black so that it stays
# visible where it runs over h (orange); the runs that share a panel differ in hue and dash.
TRAJECTORY_STYLE = {
    "mode-seeking": ("tab:blue", "-"),
    "mode-disengaging (h)": ("tab:orange", "-"),
    "SDS CFG 7.5": ("tab:green", "-"),
    "SDS CFG 100": ("goldenrod", "-"),
    "SSD": ("black", "--"),
    "SSD unscaled": ("deeppink", "-"),
    "h from trap": ("tab:purple", "-"),
    "ISM": ("tab:brown", "-."),
    "CSD annealed": ("tab:gray", "-."),
    "SDS-Bridge": ("tab:cyan", "--"),
}
# the headline panel, in drawing order (last on top): what the paper's Fig. 7 is about
HEADLINE = ("mode-disengaging (h)", "mode-seeking", "SSD unscaled", "SSD M")
HEADLINE_LABEL = {"mode-seeking": "mode-seeking", "mode-disengaging (h)": "h (mode-disengaging), for reference",
                  "SSD M": "SSD per Algorithm 1", "SSD unscaled": "SSD without line 15 (ssd-no-rescale)"}  # fmt: skip
VIEW_MARGIN = 0.3  # around the start, the conditional modes and the runs that stay near them
FAR = 2.5  # runs whose median end is farther than this from every conditional mode: the runaway panel


def _style(name, index):
    for prefix in sorted(TRAJECTORY_STYLE, key=len, reverse=True):  # "SSD unscaled" before "SSD"
        if name.startswith(prefix):
            return TRAJECTORY_STYLE[prefix]
    return COLORS[index % len(COLORS)], ":"


def _headline_key(name):
    return next((k for k in sorted(HEADLINE, key=len, reverse=True) if name.startswith(k)), None)


def _density_grid(mixture, mask, lo, hi, alpha=1.0, sigma=0.0, n=200):
    xs, ys = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    X, Y = np.meshgrid(xs, ys)
    logp = mixture.log_prob(np.stack([X.ravel(), Y.ravel()], 1), alpha, sigma, mask).reshape(X.shape)
    return X, Y, logp


def _dist_to_modes(points, modes):
    return np.min(np.linalg.norm(points[..., None, :] - modes, axis=-1), axis=-1)


def _mark_anchors(ax, modes, trap, size=1.0, label=True):
    kw = (lambda text: {"label": text}) if label else (lambda text: {})
    ax.scatter([0], [0], marker="*", s=300 * size, color="gold", edgecolor="k", zorder=7, **kw("start [0, 0]"))
    ax.scatter(modes[:, 0], modes[:, 1], marker="*", s=300 * size, color="red", edgecolor="k", zorder=7,
               **kw("conditional modes [1, 1], [2, 1]"))  # fmt: skip
    ax.scatter([trap[0]], [trap[1]], marker="D", s=110 * size, facecolor="none", edgecolor="k", lw=2, zorder=7,
               **kw(f"trap [{trap[0]:g}, {trap[1]:g}]"))  # fmt: skip


def _density_background(ax, mixture, cond_mask, lo, hi):
    X, Y, logp = _density_grid(mixture, cond_mask, lo, hi)
    # light greys (the darkest at about 45 %) so that the runs stay visible on the modes
    ax.contourf(X, Y, np.maximum(logp, -30), levels=np.linspace(-30, 1, 32), cmap="Greys", vmin=-30, vmax=25)
    lines = ax.contour(X, Y, logp, levels=[-8, -4, -2, 0], colors="k", linewidths=0.5, alpha=0.6)
    ax.clabel(lines, fmt="%g", fontsize=8.5, inline_spacing=2)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("x1 (= theta1)", fontsize=11)
    ax.set_ylabel("x2 (= theta2)", fontsize=11)


def _draw_run(ax, name, seed_paths, color, dash, label, seeds=True, z=4.0):
    import matplotlib.patheffects as pe  # noqa: PLC0415

    median = np.median(seed_paths, axis=1)  # the seeds' median path, bold
    if seeds:
        ax.plot(seed_paths[:, :, 0], seed_paths[:, :, 1], color=color, ls="-", lw=0.4, alpha=0.18, zorder=2)
    ax.plot(median[:, 0], median[:, 1], color=color, ls=dash, lw=2.8, label=label, zorder=z,
            path_effects=[pe.Stroke(linewidth=5.5, foreground="white"), pe.Normal()])  # fmt: skip
    ax.scatter(seed_paths[-1, :, 0], seed_paths[-1, :, 1], color=color, s=16, edgecolor="k", lw=0.3, zorder=z)


def plot_trajectories(path, mixture, cond_mask, main, trap, schedule, show_t, transient, title="", trap_point=(1.5, 1.0),
                      scores="exact scores"):  # fmt: skip
    """Fig. 7 in four panels, each with its own short legend. (a) the headline on log P(x|y):
    mode-seeking, SSD per Algorithm 1 and without line 15 (with h, which Algorithm 1
    follows), each seed thin and the seeds' median path bold; (b) the other runs that stay
    near the modes; (c) the runs that leave (median end farther than ``FAR`` from every
    conditional mode): their distance to the nearest conditional mode against the step;
    (d) the exact P(x_t|y) at ``show_t`` with alpha_t x along the mode-seeking paths
    (``scores`` names what gave eps_hat)."""
    fig, axes = plt.subplots(2, 2, figsize=(15, 13.2), gridspec_kw={"height_ratios": [1, 1]})
    (ax_a, ax_b), (ax_c, ax_d) = axes
    modes = mixture.means[cond_mask]
    runs = [(n, main.path[i]) for i, n in enumerate(main.names)] + [(trap.names[0], trap.path[0])]
    ends = {n: np.median(_dist_to_modes(p[-1], modes)) for n, p in runs}
    far = [n for n, _ in runs if ends[n] > FAR]
    near = [(n, p) for n, p in runs if n not in far]
    pts = np.concatenate([[[0.0, 0.0]], modes] + [p.reshape(-1, 2) for _, p in near])
    lo, hi = pts.min(0) - VIEW_MARGIN, pts.max(0) + VIEW_MARGIN
    # (a) the headline
    _density_background(ax_a, mixture, cond_mask, lo, hi)
    headline = sorted((r for r in near if _headline_key(r[0])), key=lambda r: HEADLINE.index(_headline_key(r[0])))
    for z, (name, seed_paths) in enumerate(headline):
        color, dash = _style(name, 0)
        key = _headline_key(name)
        label = f"{HEADLINE_LABEL[key]}: ends {ends[name]:.2f} from a mode"
        if key == "mode-seeking":
            label = f"mode-seeking: trapped, ends {np.median(np.linalg.norm(seed_paths[-1] - trap_point, axis=1)):.2f} from the trap"
        _draw_run(ax_a, name, seed_paths, color, dash, label, seeds=key != "mode-disengaging (h)", z=4 + z / 10)
    _mark_anchors(ax_a, modes, trap_point, label=False)
    ax_a.legend(fontsize=10.5, loc="lower right", framealpha=0.95, title="median of the seeds' end distances",
                title_fontsize=10)  # fmt: skip
    ax_a.set_title("(a) the headline: SSD per Algorithm 1 follows h past the modes;\n"
                   "without line 15 it reaches [2, 1]; mode-seeking is trapped at [1.5, 1]", fontsize=12.5,
                   fontweight="bold")  # fmt: skip
    # (b) the other runs that stay near the modes
    _density_background(ax_b, mixture, cond_mask, lo, hi)
    others = [r for r in near if not _headline_key(r[0])]
    for i, (name, seed_paths) in enumerate(others):
        color, dash = _style(name, i)
        _draw_run(ax_b, name, seed_paths, color, dash, f"{name}: ends {ends[name]:.2f} from a mode", z=4 + i / 10)
    _mark_anchors(ax_b, modes, trap_point)
    ax_b.legend(fontsize=10.5, loc="lower right", framealpha=0.95)
    ax_b.set_title("(b) the other runs that stay near the modes\n"
                   "(log P(x|y) in grey, contours labelled; each seed thin, the median bold)", fontsize=12)  # fmt: skip
    # (c) the runs that leave: labelled at their ends (pushed apart where they would overlap)
    record, label_y = main.steps, []
    curves = []
    for i, name in enumerate(far):
        seed_paths = main.path[main.names.index(name)] if name in main.names else trap.path[0]
        curves.append((name, np.median(_dist_to_modes(seed_paths, modes), axis=1), *_style(name, i)))
    for name, dist, color, dash in sorted(curves, key=lambda c: c[1][-1]):
        ax_c.plot(record, dist, color=color, ls=dash, lw=2.8 if dash != "-" else 3.6, zorder=3 + (dash != "-"))
        y = dist[-1] if not label_y else max(dist[-1], label_y[-1] + 0.06 * max(c[1].max() for c in curves))
        label_y.append(y)
        ax_c.annotate(name, (record[-1], y), xytext=(6, 0), textcoords="offset points", va="center", fontsize=11,
                      color=color, fontweight="bold")  # fmt: skip
    if "SDS-Bridge" in far and "SDS CFG 100" in far:
        ax_c.text(0.03, 0.97, "SDS-Bridge runs SDS CFG 100 until half-way, then c - src\n(the source prompt: the singular "
                  "mode [0, 0])", transform=ax_c.transAxes, va="top", fontsize=10.5)  # fmt: skip
    if far:
        ax_c.set_xlim(0, record[-1] * 1.27)
        ax_c.set_ylim(0, max(max(c[1].max() for c in curves), label_y[-1]) * 1.08)
    else:
        ax_c.text(0.5, 0.5, "every run stays near the modes", ha="center", transform=ax_c.transAxes, fontsize=12)
    ax_c.grid(True, alpha=0.3)
    ax_c.set_xlabel("step", fontsize=11)
    ax_c.set_ylabel("distance to the nearest conditional mode (median of the seeds)", fontsize=11)
    ax_c.set_title(f"(c) the runs that leave the view of (a) and (b) (end > {FAR:g} from a mode)", fontsize=12)
    # (d) the transient mode
    a, s = float(schedule.alpha(show_t)), float(schedule.sigma(show_t))
    _, _, logp = _density_grid(mixture, cond_mask, [-0.4, -0.4], [2.4, 1.8], a, s)
    filled = ax_d.imshow(np.exp(logp), origin="lower", extent=(-0.4, 2.4, -0.4, 1.8), cmap="viridis",
                         interpolation="bilinear")  # fmt: skip
    fig.colorbar(filled, ax=ax_d, label=f"exact P(x_t|y) at t = {show_t}", shrink=0.72, pad=0.06)
    ms = main.names.index("mode-seeking")
    for sd in range(main.path.shape[2]):
        ax_d.plot(a * main.path[ms, :, sd, 0], a * main.path[ms, :, sd, 1], color="w", lw=0.5, alpha=0.6)
    ax_d.scatter(a * modes[:, 0], a * modes[:, 1], marker="*", s=220, color="red", edgecolor="k",
                 label="induced modes alpha_t o", zorder=5)  # fmt: skip
    ax_d.scatter(transient[:, 0], transient[:, 1], marker="X", s=130, color="orange", edgecolor="k",
                 label="transient mode alpha_t o_tr", zorder=5)  # fmt: skip
    ax_d.set_xticks([0, 0.5, 1, 1.5, 2])
    ax_d.set_xlabel("x_t,1", fontsize=11)
    ax_d.set_ylabel("x_t,2", fontsize=11)
    ax_d.set_title(f"(d) the exact P(x_t|y) at t = {show_t}; white: alpha_t x\nalong the mode-seeking paths ({scores})",
                   fontsize=12)  # fmt: skip
    ax_d.legend(fontsize=10.5, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97 if title else 1))
    fig.savefig(path, dpi=80)
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


SATURATION = 1.125  # one grey level (16 over [-1, 1]) beyond the data range
SHOWN_RANGE = 1.5


def saturation_colormap():
    """Grey inside ``[-SATURATION, SATURATION]`` (white at -1.125, black at 1.125, like the
    data's ink), blue below and red above it, darker the farther out, to ``+-SHOWN_RANGE``:
    a saturated pixel is coloured, so the digit's shape stays readable."""
    from matplotlib.colors import ListedColormap  # noqa: PLC0415

    n, width = 240, 2 * SHOWN_RANGE  # 0.0125 per entry: +-1.125 fall on entry boundaries
    outside = int(round((SHOWN_RANGE - SATURATION) / width * n))
    inside = n - 2 * outside
    blues = plt.get_cmap("Blues")(np.linspace(1.0, 0.45, outside))
    greys = plt.get_cmap("gray_r")(np.linspace(0.0, 1.0, inside))
    reds = plt.get_cmap("Reds")(np.linspace(0.45, 1.0, outside))
    return ListedColormap(np.concatenate([blues, greys, reds]), name="saturation")


def plot_digits(path, names, theta, class_means, title=""):
    """A grid: one row per estimator (and the class means), one column per class; pixels more
    than one grey level outside [-1, 1] in colour (``saturation_colormap``), each row's share
    of them at its right; drawn as one mosaic image (90 small axes took seconds on a busy machine)."""
    rows = [("class mean", class_means)] + list(zip(names, theta, strict=True))
    cell, gap = 8, 2
    step = cell + gap
    mosaic = np.full((len(rows) * step - gap, 10 * step - gap), np.nan)
    shares = []
    for i, (_, imgs) in enumerate(rows):
        shares.append(float(np.mean(np.abs(np.asarray(imgs)[:10]) > SATURATION)))
        for c in range(10):
            img = imgs[c].reshape(8, 8)
            mosaic[i * step:i * step + cell, c * step:c * step + cell] = np.clip(img, -SHOWN_RANGE, SHOWN_RANGE)
    fig, ax = plt.subplots(figsize=(12.5, 9.0 * mosaic.shape[0] / mosaic.shape[1] + 0.8))  # height: the mosaic's
    cmap = saturation_colormap().with_extremes(bad="white")
    shown = ax.imshow(mosaic, cmap=cmap, vmin=-SHOWN_RANGE, vmax=SHOWN_RANGE, interpolation="nearest")
    ax.set_xticks([c * step + cell / 2 - 0.5 for c in range(10)], [f"class {c}" for c in range(10)], fontsize=12)
    ax.xaxis.tick_top()
    ax.set_yticks([i * step + cell / 2 - 0.5 for i in range(len(rows))], [name for name, _ in rows], fontsize=12.5)
    for i, share in enumerate(shares):
        ax.text(10 * step - gap + 1, i * step + cell / 2 - 0.5, f"{share:.0%}", va="center", fontsize=12.5,
                color="firebrick" if share else "0.3")  # fmt: skip
    ax.text(10 * step - gap + 1, -2.6, "saturated", fontsize=11, va="bottom")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    bar = fig.colorbar(shown, ax=ax, shrink=0.85, pad=0.09, ticks=[-1.5, -1.125, -0.5, 0, 0.5, 1.125, 1.5], format="%g")
    bar.set_label("pixel value (data in [-1, 1]); blue / red: saturated below / above", fontsize=11.5)
    bar.ax.tick_params(labelsize=11)
    ax.set_title(title or "digits", fontsize=12.5, pad=34)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def plot_drift(path, ts, lambdas, d, nets, M, at, mode, noises, at_mode=None, stable=None):
    """Left: at the mode, the outward push of ``h`` (t > M) against the inward pull of the
    t <= M branch, rescaled to ``||h||`` (Algorithm 1) or not, per t (log axis), with the
    per-step averages (``at_mode``). Right: the net drift along the ray against the position
    on it; a run settles where it crosses 0 from above (``stable``: name -> lam or None)."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 6.0), gridspec_kw={"width_ratios": [1.15, 1]})
    above, below = ts > M, ts <= M
    ax.axvspan(ts[0], M, color="0.92", zorder=0)
    ax.text(M * 0.55 + ts[0] * 0.45, 0.1, f"t <= M = {M:g}", transform=ax.get_xaxis_transform(), ha="center", fontsize=10,
            bbox=dict(fc="0.92", ec="none"))  # fmt: skip
    ax.semilogy(ts[above], np.abs(d["push"][above, at]), color="tab:orange", lw=2.4, label="push outward: -h (t > M)")
    ax.semilogy(ts[below], np.abs(d["pull_unscaled"][below, at]), color="deeppink", lw=2.4,
                label="pull inward without line 15: -(eps_cond - r eps)")  # fmt: skip
    ax.semilogy(ts[below], np.abs(d["pull"][below, at]), color="black", lw=2.4, ls="--",
                label="pull inward, Algorithm 1 (rescaled to ||h||)")  # fmt: skip
    ax.semilogy(ts, d["h_norm"][:, at], color="0.45", lw=1.4, ls=":", label="||h|| (mean over noises)")
    if at_mode:
        ax.text(0.37, 0.50, (f"per step, averaged over t (w = 1):\n"
                             f"  push (t > M, {at_mode['share_of_steps_t_above_M']:.0%} of steps)  {at_mode['push_per_step']:+.3f}\n"
                             f"  pull, Algorithm 1            {at_mode['pull_per_step']:+.1e}\n"
                             f"  pull, without line 15        {at_mode['pull_unscaled_per_step']:+.3f}"),
                transform=ax.transAxes, fontsize=10.5, family="monospace", va="top",
                bbox=dict(boxstyle="round", fc="white", ec="0.6"))  # fmt: skip
    ax.set_xlabel("timestep t", fontsize=11)
    ax.set_ylabel("size of the expected update along the ray, per unit lr (log)", fontsize=11)
    ax.set_title(f"at the mode [{mode[0]:g}, {mode[1]:g}]: what each branch does per t\n"
                 f"(the component along the ray from [0, 0]; {noises} noises per t)", fontsize=11)  # fmt: skip
    ax.legend(fontsize=10, loc="lower right")
    ax.grid(True, which="major", alpha=0.3)
    styles = {"SSD (Algorithm 1)": ("black", "--"), "SSD without line 15": ("deeppink", "-"), "h alone": ("tab:orange", ":")}
    ax2.axhline(0, color="0.3", lw=1)
    ax2.axvline(1.0, color="red", lw=1.2, alpha=0.7)
    ax2.text(1.0, 0.95, f" mode [{mode[0]:g}, {mode[1]:g}]", color="red", transform=ax2.get_xaxis_transform(), fontsize=10)
    for name, v in nets.items():
        color, ls = styles.get(name, ("tab:blue", "-"))
        lam = (stable or {}).get(name)
        where = f"settles at lam = {lam:.2f}" if lam is not None else "above 0 everywhere: keeps moving out"
        ax2.plot(lambdas, v, color=color, ls=ls, lw=2.4, label=f"{name}: {where}")
        if lam is not None:
            ax2.scatter([lam], [0], s=90, color=color, edgecolor="k", zorder=5)
    ax2.set_xlabel(f"position on the ray: theta = lam [{mode[0]:g}, {mode[1]:g}]", fontsize=11)
    ax2.set_ylabel("net drift outward per step, per unit lr", fontsize=11)
    ax2.set_title(f"net drift with t uniform on [{ts[0]}, {ts[-1]}]: above 0 moves out,\n"
                  "below 0 moves in; a run settles where it crosses 0 downward", fontsize=11)  # fmt: skip
    ax2.legend(fontsize=10, loc="lower left")
    ax2.grid(True, alpha=0.3)
    fig.suptitle("Why SSD per Algorithm 1 leaves the mode: near the modes ||h|| vanishes at small t, and line 15 "
                 "scales the pull with it", fontsize=12)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
