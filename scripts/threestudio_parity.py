"""ssd-toolkit-guidance with ``estimator: sds`` against threestudio's own
``stable-diffusion-guidance``, on the tiny random SD: same global seed, losses step for step.

Runs threestudio's guidance file unmodified from a checkout OUTSIDE this repository (none of
its code is in ours). threestudio's package ``__init__`` (every system and model) is not run:
only ``utils/`` and ``models/guidance/stable_diffusion_guidance.py`` are imported, with
import-only stand-ins for ``tinycudann`` and ``igl``, which that path never calls, and
``get_device()`` set to the CPU. It needs ``jaxtyping`` and ``typeguard`` (threestudio's
requirements), e.g. ``pip install --target /tmp/tsdeps --no-deps jaxtyping wadler-lindig typeguard``.

    git clone https://github.com/threestudio-project/threestudio /tmp/threestudio
    python scripts/threestudio_parity.py --threestudio /tmp/threestudio --extra-path /tmp/tsdeps
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_threestudio_guidance(checkout):
    """threestudio's ``stable-diffusion-guidance`` class, imported without its package ``__init__``."""
    import torch

    tcnn = types.ModuleType("tinycudann")
    tcnn.free_temporary_memory = lambda: None  # misc.cleanup() calls it
    sys.modules["tinycudann"] = tcnn
    igl = types.ModuleType("igl")
    for name in ("fast_winding_number_for_meshes", "point_mesh_squared_distance", "read_obj"):
        setattr(igl, name, None)
    sys.modules["igl"] = igl
    package = types.ModuleType("threestudio")
    package.__path__ = [str(checkout / "threestudio")]
    package.__modules__ = {}

    def register(name):
        def decorator(cls):
            package.__modules__[name] = cls
            return cls

        return decorator

    package.register, package.find = register, package.__modules__.__getitem__
    package.info = package.debug = package.warn = lambda *args, **kwargs: None
    sys.modules["threestudio"] = package
    for sub in ("models", "models.guidance", "models.prompt_processors"):
        module = types.ModuleType(f"threestudio.{sub}")
        module.__path__ = [str(checkout / "threestudio" / sub.replace(".", "/"))]
        sys.modules[f"threestudio.{sub}"] = module
    misc = importlib.import_module("threestudio.utils.misc")
    base = importlib.import_module("threestudio.utils.base")
    misc.get_device = base.get_device = lambda: torch.device("cpu")
    importlib.import_module("threestudio.models.guidance.stable_diffusion_guidance")
    importlib.import_module("ssd_toolkit.integrations.threestudio.guidance")  # registers ours
    return package


def run(build, utils, renders, rgb_as_latents, seed):
    """Seed, build the guidance, then train: launch.py's order (so the build's use of the
    global generator, if any, counts too)."""
    import torch

    from threestudio_fakes import camera_batch

    torch.manual_seed(seed)  # threestudio's launch.py: pl.seed_everything(cfg.seed)
    guidance = build()
    rows = []
    for step, render in enumerate(renders):
        guidance.update_step(0, step)
        rgb = render.clone().requires_grad_(True)
        out = guidance(rgb, utils, **camera_batch(rgb.shape[0], seed=step), rgb_as_latents=rgb_as_latents)
        out["loss_sds"].backward()
        rows.append((float(out["loss_sds"]), float(out["grad_norm"]), rgb.grad.detach().clone()))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threestudio", type=Path, required=True, help="a threestudio checkout")
    parser.add_argument("--extra-path", action="append", default=[], help="a folder with jaxtyping/typeguard")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--half", action="store_true", help="half_precision_weights: true (threestudio's default)")
    args = parser.parse_args(argv)
    sys.path[:0] = [*args.extra_path, str(args.threestudio), str(REPO / "tests")]
    import torch

    from ssd_toolkit.integrations.guidance.tiny import build_tiny_pipeline
    from threestudio_fakes import PromptOutput

    threestudio = load_threestudio_guidance(args.threestudio)
    tiny = build_tiny_pipeline(Path(tempfile.mkdtemp()) / "tiny", seed=0)
    cfg = {"pretrained_model_name_or_path": str(tiny), "half_precision_weights": args.half, "guidance_scale": 7.5}
    def theirs():
        return threestudio.find("stable-diffusion-guidance")(cfg)

    def ours():
        return threestudio.find("ssd-toolkit-guidance")({**cfg, "estimator": "sds"})

    utils = PromptOutput(ours().guidance.encode_prompts)
    tolerance = 1e-3 if args.half else 1e-5
    worst = 0.0
    for rgb_as_latents in (False, True):
        shape = (args.batch, 16, 16, 4) if rgb_as_latents else (args.batch, 64, 64, 3)
        renders = torch.rand(args.steps, *shape, generator=torch.Generator().manual_seed(5))
        a_rows = run(theirs, utils, renders, rgb_as_latents, seed=0)
        b_rows = run(ours, utils, renders, rgb_as_latents, seed=0)
        print(f"rgb_as_latents={rgb_as_latents} batch={args.batch} half_precision_weights={args.half}")
        for step, (a, b) in enumerate(zip(a_rows, b_rows)):
            rel = abs(a[0] - b[0]) / abs(a[0])
            worst = max(worst, rel)
            grad_rel = float((a[2] - b[2]).norm() / a[2].norm())
            print(f"  step {step}: loss_sds {a[0]:.6g} (threestudio) vs {b[0]:.6g} (ours), rel {rel:.1e}; "
                  f"grad_norm {a[1]:.6g} vs {b[1]:.6g}; render gradient rel diff {grad_rel:.1e}")
    print(f"worst relative loss difference {worst:.1e} (tolerance {tolerance:.0e})")
    return 0 if worst < tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
