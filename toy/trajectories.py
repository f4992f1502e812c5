"""Experiment 1 (Fig. 7): learning trajectories of theta = x in R^2 under each estimator.

theta starts at the singular mode [0, 0] for every seed and follows Eq. 3 with each
estimator in place of the SDS estimator; a second run starts h at the trapping point
[1.5, 1]. The right panel of the figure shows P(x_t | y) at t = 350 (one transient mode
where the two induced modes alpha_t [1,1], alpha_t [2,1] have melted) and the
mode-seeking path of alpha_t x.
"""

from __future__ import annotations

import os
import time

import numpy as np

import ssd_toolkit

from .estimator_sets import fig7_estimators
from .mixture import paper_mixture
from .modes import find_modes
from .optimize import distill, make_sampler
from .report import markdown_table, write_json, write_markdown

TRAP = (1.5, 1.0)
SHOW_T = 350
H_FROM_TRAP = "h from trap [1.5, 1]"


def end_state_summary(mixture, cond_mask, theta):
    """Per-seed end-state numbers for ``theta`` ``[S, 2]``: distances, log densities."""
    modes = mixture.means[cond_mask]
    dist = np.min(np.linalg.norm(theta[:, None, :] - modes[None], axis=-1), axis=1)
    return {
        "end_mean": theta.mean(0),
        "end_std": theta.std(0),
        "dist_to_cond_mode_median": float(np.median(dist)),
        "dist_to_cond_mode_max": float(dist.max()),
        "frac_within_0.25_of_cond_mode": float(np.mean(dist < 0.25)),
        "dist_to_trap_median": float(np.median(np.linalg.norm(theta - np.array(TRAP), axis=1))),
        "log_p_cond_mean": float(mixture.log_prob(theta, mask=cond_mask).mean()),
        "log_p_uncond_mean": float(mixture.log_prob(theta).mean()),
        "end_points": theta,
    }


def run_fig7(seeds=16, steps=3000, lr=0.01, M=200.0, weighting="uniform", seed=0, t_range=(20, 980), progress=False,
             model=None, names=None):  # fmt: skip
    """Both runs of Fig. 7, all estimators and seeds vectorised.

    Args:
        model: what gives ``eps_hat``: the exact paper mixture (None) or a
            ``learned_denoiser.LearnedDenoiser``.
        names: only these of Fig. 7's estimators (default all); each run is the same as in
            the full set (every estimator sees the same t and noise, common random numbers).

    Returns:
        ``(main, trap, seconds)``: the two ``DistillResult``s and the wall time of both.
    """
    mixture, cond_mask = paper_mixture()
    mixture = mixture if model is None else model
    schedule = ssd_toolkit.stable_diffusion_schedule()
    kw = dict(schedule=schedule, steps=steps, lr=lr, weighting=weighting)
    start = time.perf_counter()
    exact = model is None  # the learned denoiser has no negative-prompt label
    estimators = fig7_estimators(M, steps=steps if exact else None)
    if names is not None:
        estimators = {name: estimators[name] for name in names}
    main = distill(
        mixture,
        cond_mask,
        estimators,
        np.zeros((seeds, 2)),
        sampler=make_sampler(steps, seed=seed, t_range=t_range),
        seed=seed,
        neg_mask=~cond_mask if exact else None,
        progress=progress and "Fig. 7",
        **kw,
    )
    trap = distill(
        mixture,
        cond_mask,
        {H_FROM_TRAP: ssd_toolkit.get_estimator("csd")},
        np.tile(TRAP, (seeds, 1)),
        sampler=make_sampler(steps, seed=seed + 1, t_range=t_range),
        seed=seed + 1,
        progress=progress and "Fig. 7, h from the trap",
        **kw,
    )
    return main, trap, time.perf_counter() - start


def run(out="toy_out", seed=0, seeds=16, steps=3000, lr=0.01, M=200.0, weighting="uniform", progress=False,
        denoiser="exact"):  # fmt: skip
    """Run Fig. 7, write ``trajectories.{png,json,md}`` under ``out`` (``trajectories_learned.*``
    with ``denoiser="learned"``: a CFG denoiser trained on the mixture, cached under
    ``out/denoiser/``, gives eps_hat); return the summary dict."""
    from .plots import plot_trajectories  # noqa: PLC0415 - matplotlib only when plotting

    mixture, cond_mask = paper_mixture()
    schedule = ssd_toolkit.stable_diffusion_schedule()
    model, learned = None, None
    if denoiser == "learned":
        from . import learned_denoiser  # noqa: PLC0415 - torch only here

        model, learned = learned_denoiser.load_or_train(out, mixture, cond_mask, schedule,
                                                        learned_denoiser.DenoiserSettings(seed=seed), progress)  # fmt: skip
        learned["fidelity"] = learned_denoiser.fidelity(model, mixture, cond_mask, schedule,
                                                        np.random.default_rng(seed + 2))  # fmt: skip
    elif denoiser != "exact":
        raise ValueError(f"denoiser: expected 'exact' or 'learned', got {denoiser!r}")
    if model is None:
        main, trap, seconds = run_fig7(seeds, steps, lr, M, weighting, seed, progress=progress)
    else:
        with learned_denoiser.one_torch_thread():  # ~1 ms per call instead of ~7 with two threads
            main, trap, seconds = run_fig7(seeds, steps, lr, M, weighting, seed, progress=progress, model=model)
    a, s = float(schedule.alpha(SHOW_T)), float(schedule.sigma(SHOW_T))
    transient = find_modes(mixture, a, s, cond_mask)
    per = {name: end_state_summary(mixture, cond_mask, main.theta[i]) for i, name in enumerate(main.names)}
    per[H_FROM_TRAP] = end_state_summary(mixture, cond_mask, trap.theta[0])
    summary = {
        "config": dict(
            seeds=seeds,
            steps=steps,
            lr=lr,
            M=M,
            weighting=weighting,
            seed=seed,
            t_range=[20, 980],
            schedule="stable_diffusion (scaled-linear 0.00085..0.012, 1000 steps)",
        ),
        "denoiser": "exact mixture scores" if learned is None else {"kind": "learned CFG MLP", **learned},
        "seconds_both_runs": seconds,
        "transient_modes_at_t350_over_alpha": transient / a,
        "estimators": per,
    }
    os.makedirs(out, exist_ok=True)
    stem = "trajectories" if learned is None else "trajectories_learned"
    png = os.path.join(out, f"{stem}.png")
    scores = "exact scores" if learned is None else "a learned CFG denoiser"
    title = (f"Fig. 7 on the paper's mixture with {scores}: {seeds} seeds x {steps} steps, lr {lr:g}, w(t) {weighting}, "
             f"t ~ U{{20..980}}, SSD M = {M:g}, seed {seed}")  # fmt: skip
    plot_trajectories(png, mixture, cond_mask, main, trap, schedule, SHOW_T, transient, title, TRAP, scores)
    write_json(os.path.join(out, f"{stem}.json"), summary)
    rows = [
        (
            n,
            f"[{v['end_mean'][0]:.2f}, {v['end_mean'][1]:.2f}]",
            v["dist_to_cond_mode_median"],
            v["dist_to_cond_mode_max"],
            v["dist_to_trap_median"],
            v["log_p_cond_mean"],
            v["log_p_uncond_mean"],
        )
        for n, v in per.items()
    ]
    table = markdown_table(
        [
            "estimator",
            "mean end point",
            "dist. to nearest cond. mode (median)",
            "(max)",
            "dist. to trap [1.5,1] (median)",
            "log P(x|y)",
            "log P(x)",
        ],
        rows,
    )
    if learned is not None:
        fid = ", ".join(f"t={r['t']}: {r['h']:.2f}" for r in learned["fidelity"])
        scores = (f"a learned CFG denoiser (MLP, training loss {learned['final_loss_mean_last_100']:.4f}, "
                  f"{learned['train_seconds']:.0f} s{', cached' if learned['cached'] else ''}; relative RMS error of its h "
                  f"against the exact h near P(x|y): {fid})")  # fmt: skip
    write_markdown(
        os.path.join(out, f"{stem}.md"),
        f"Fig. 7: trajectories on the paper's mixture ({'exact scores' if learned is None else 'learned denoiser'})",
        [
            f"eps_hat from {scores}. "
            f"{seeds} seeds x {steps} steps, lr {lr}, w(t) {weighting}, t ~ U{{20..980}}, SSD M = {M:g}; "
            f"both runs took {seconds:.2f} s. Transient mode of P(x_t|y) at t = {SHOW_T}, divided by alpha_t: "
            f"{np.round(transient / a, 3).tolist()}.",
            table,
            f"![trajectories]({os.path.basename(png)})",
        ],
    )
    return summary
