"""The numbers in docs/estimators.md against the authors' code, on fixed inputs.

Runs their files unmodified from a checkout OUTSIDE this repository (none of their code is
in ours): DreamWaltz-G's ``calc_gradients`` (annealed ``csd``, the ``grad_latent_*`` options)
and LucidDreamer's ISM noisy input (``add_noise_with_cfg`` + ``ddim_step``). Their imports that
need a GPU stack (configs, PGC hooks, torchvision) are replaced by stubs in a scratch folder.

    git clone https://github.com/Yukun-Huang/DreamWaltz-G /tmp/DreamWaltz-G
    git clone https://github.com/EnVision-Research/LucidDreamer /tmp/LucidDreamer
    python scripts/compare_upstream.py --dreamwaltz-g /tmp/DreamWaltz-G --luciddreamer /tmp/LucidDreamer
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import textwrap
import types

import numpy as np


def report(label, theirs, ours):
    d = (theirs.double() - ours.double()).abs().max().item()
    print(f"{label:44s} max abs diff {d:.2e}  max rel diff {d / theirs.abs().max().item():.2e}")


def dreamwaltz_g(repo):
    import torch

    import ssd_toolkit
    from ssd_toolkit.estimators import at_step
    from ssd_toolkit.gradient_options import GradientOptions

    scratch = tempfile.mkdtemp()
    stubs = {
        "core/__init__.py": "", "core/guidance/__init__.py": "", "core/guidance/ism/__init__.py": "",
        "core/guidance/ism/guidance/__init__.py": "", "core/guidance/ism/guidance/sd_step.py": "ddim_step = None\n",
        "core/guidance/pgc.py": "build_grad_hook_func = build_pgc_hook_func = None\n",
        "core/guidance/time_prior.py": "class TimePrioritizedScheduler:\n    pass\n",
        "configs/__init__.py": "class GuideConfig:\n    pass\n",
    }  # fmt: skip
    for path, text in stubs.items():
        os.makedirs(os.path.dirname(os.path.join(scratch, path)), exist_ok=True)
        with open(os.path.join(scratch, path), "w") as f:
            f.write(text)
    shutil.copy(os.path.join(repo, "core/guidance/basic.py"), os.path.join(scratch, "core/guidance/basic.py"))
    sys.path.insert(0, scratch)
    from core.guidance.basic import BasicScoreDistillation

    rng = np.random.default_rng(7)
    shape = (4, 4, 8, 8)
    u, c, neg, noise = (torch.from_numpy(rng.standard_normal(shape)).float() for _ in range(4))
    t = torch.tensor([50, 300, 600, 950])

    def theirs(loss_type, cond, train_step=None, max_iteration=None, **cfg):
        obj = object.__new__(BasicScoreDistillation)
        obj.loss_type, obj.weight_type, obj.use_negative_text = loss_type, None, False
        obj.do_classifier_free_guidance, obj.guidance_scale, obj.timestep = True, 50.0, t
        flags = dict(grad_latent_clip=False, grad_latent_clip_scale=1.0, grad_latent_norm=False,
                     grad_latent_nan_to_num=False)  # fmt: skip
        obj.cfg = types.SimpleNamespace(**{**flags, **cfg})
        obj.scheduler = types.SimpleNamespace(scale_model_input=lambda x, t: x)
        k = 3 if loss_type == "csd" else 2
        obj._predict = lambda x, e, **kw: torch.cat([u, cond, neg][:k])
        emb = dict.fromkeys(("null", "text", "neg"), torch.zeros(1, 2, 3))
        return obj.calc_gradients(torch.zeros(shape), emb, noise, train_step=train_step, max_iteration=max_iteration)[0]

    est = ssd_toolkit.get_estimator("csd-annealed")
    for step, total in [(None, None), (0, 1000), (250, 1000), (999, 1000), (1000, 1000)]:
        report(f"csd-annealed, step {step}/{total}", theirs("csd", c, step, total),
               at_step(est, step, total)(c, u, noise, t, eps_negative=neg))  # fmt: skip
    report("plain csd (ours 'csd') vs their csd", theirs("csd", c, 500, 1000), ssd_toolkit.get_estimator("csd")(c, u, noise, t))
    bad = c.clone()
    bad[0, 0, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    bad[1] *= 30
    for flags in [dict(grad_latent_clip=True, grad_latent_clip_scale=0.5), dict(grad_latent_norm=True),
                  dict(grad_latent_nan_to_num=True),
                  dict(grad_latent_clip=True, grad_latent_norm=True, grad_latent_nan_to_num=True)]:  # fmt: skip
        g, ours = theirs("sds", bad, **flags), GradientOptions(**flags)(u + 50.0 * (bad - u) - noise)
        finite = torch.isfinite(g)
        assert torch.equal(finite, torch.isfinite(ours)), flags
        report("sds + " + ", ".join(flags), g[finite], ours[finite])


def luciddreamer(repo, steps_offset):
    import diffusers.utils
    import diffusers.utils.torch_utils
    import torch
    import transformers  # noqa: F401 - before the torchvision stub below
    from diffusers import DDIMScheduler

    import ssd_toolkit

    diffusers.utils.randn_tensor = diffusers.utils.torch_utils.randn_tensor  # moved in newer diffusers
    for name in ("torchvision", "torchvision.transforms"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.path.insert(0, os.path.join(repo, "guidance"))
    from sd_step import ddim_step

    src = open(os.path.join(repo, "guidance/sd_utils.py")).read()
    body = src[src.index("    def add_noise_with_cfg"):src.index("    @torch.no_grad()\n    def get_text_embeds")]
    namespace = {"torch": torch, "DDIMScheduler": DDIMScheduler}
    exec(textwrap.dedent(body), namespace)  # their method, unmodified, as a function
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=steps_offset)  # fmt: skip
    sched.set_timesteps(1000)
    W = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.3

    def denoiser(x, t):  # a fixed smooth stand-in for the UNet
        tt = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return torch.tanh(torch.einsum("ij,bjhw->bihw", W, x) + 1e-3 * tt) - 0.1 * x

    unet = lambda x, t, encoder_hidden_states=None: types.SimpleNamespace(sample=denoiser(x, t))  # noqa: E731
    obj = types.SimpleNamespace(unet=unet, scheduler=sched, timesteps=torch.flip(sched.timesteps, dims=(0,)),
                                precision_t=torch.float64, sche_func=ddim_step)  # fmt: skip
    g = torch.Generator().manual_seed(1)
    x0, noise = (torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    emb, abar = torch.zeros(2, 1, 77, 8, dtype=torch.float64), sched.alphas_cumprod.double()
    est = ssd_toolkit.get_estimator("ism")
    print(f"LucidDreamer ISM, scheduler steps_offset={steps_offset}")
    for ind_t in (20, 100, 250, 499, 760, 980):
        ind_s = max(ind_t - 80, 0)
        _, x_s, scores_s = namespace["add_noise_with_cfg"](obj, x0, noise, ind_s, max(ind_s - 1000, 0), emb, 1.0, 200, 5)
        _, x_t, scores_t = namespace["add_noise_with_cfg"](obj, x_s, noise, ind_t, ind_s, emb, 1.0, 80, 1,
                                                           is_noisy_latent=True)  # fmt: skip
        ours_x, ours_target, calls = est.noisy_input(denoiser, x0, noise, torch.tensor([ind_t]), abar)
        assert calls == len(scores_s) + len(scores_t)
        report(f"  t={ind_t} x_t ({calls} calls)", x_t, ours_x)
        report(f"  t={ind_t} target", (scores_t + scores_s)[0][1], ours_target)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dreamwaltz-g", help="a DreamWaltz-G checkout")
    p.add_argument("--luciddreamer", help="a LucidDreamer checkout")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.dreamwaltz_g:
        dreamwaltz_g(args.dreamwaltz_g)
    if args.luciddreamer:
        for offset in (0, 1):  # 1 is Stable Diffusion's own scheduler config
            luciddreamer(args.luciddreamer, offset)


if __name__ == "__main__":
    main()
