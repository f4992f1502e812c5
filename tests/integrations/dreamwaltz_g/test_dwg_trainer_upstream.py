"""DreamWaltz-G's ``Trainer``, its own file and the same file with the documented import change,
for a few optimisation steps (needs ``DREAMWALTZ_G_DIR`` and their diffusers pin; skips otherwise).

Their code that runs: ``pyrallis.parse`` of ``TrainConfig`` (command-line flags), and the
Trainer's ``init_diffusion``, ``init_text_embeddings``, ``init_losses`` and ``train_forward``
(view-prompt choice, ``sd_kwargs``, ``self.diffusion(**sd_kwargs)``, ``lambda_guidance``),
then their loop's ``scaler.scale(loss).backward()`` and ``scaler.step``. Stood in: the
renderer (a learnable RGB image in place of the NeRF / 3DGS render), the data batch (fixed
camera angles, one random pose-condition image), the tiny pipelines under their hub ids,
and empty modules for the 3D / CUDA packages ``core/trainer.py`` imports but these
functions never call (dwg_standins.TRAINER_ONLY_IMPORTS).
"""

from __future__ import annotations

import importlib.util
import types

import pytest

import dwg_standins as S

DWG = S.dreamwaltz_g_dir()
pytestmark = pytest.mark.skipif(DWG is None, reason="DREAMWALTZ_G_DIR: a DreamWaltz-G checkout (not in CI)")
torch = pytest.importorskip("torch")
STEPS = 3


@pytest.fixture(scope="module")
def trainers(dwg_env, tmp_path_factory):
    """(their core.trainer module, the same file with the documented change) (conftest's stand-ins)."""
    import core.trainer as theirs  # noqa: PLC0415

    path = tmp_path_factory.mktemp("swapped") / "trainer_swapped.py"
    path.write_text(S.swapped_trainer_source(dwg_env))
    spec = importlib.util.spec_from_file_location("core.trainer_swapped", path)
    swapped = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(swapped)
    return theirs, swapped


def train(module, *flags):
    """``STEPS`` steps of their training loop body with a learnable image as the render."""
    import numpy as np  # noqa: PLC0415
    import pyrallis  # noqa: PLC0415
    from core.guidance.text import TextAugmentation  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    args = ["--device", "cpu", "--stage", "nerf", "--guide.text", "a wooden robot", "--guide.input_interpolate",
            "False", "--optim.iters", str(STEPS), *flags]  # fmt: skip
    cfg = pyrallis.parse(config_class=module.TrainConfig, args=args)
    tr = object.__new__(module.Trainer)
    tr.cfg, tr.device = cfg, torch.device("cpu")
    tr.use_controlnet, tr.controlnet_condition = cfg.guide.use_controlnet, cfg.guide.controlnet_condition
    tr.view_prompt = TextAugmentation(text=cfg.guide.text, cfg=cfg.prompt)
    tr.diffusion = tr.init_diffusion()
    tr.text_embeds_dict = tr.init_text_embeddings(tr.diffusion)
    tr.losses = tr.init_losses()
    tr.scaler = torch.cuda.amp.GradScaler(enabled=False)
    tr.max_step = cfg.optim.iters
    side = 768 if cfg.guide.use_sdxl else 512
    torch.manual_seed(0)
    image = torch.nn.Parameter(torch.zeros(1, side, side, 3))
    optimizer = torch.optim.Adam([image], lr=1e-2)
    tr.render = lambda data, bg_mode=None: {"image": torch.sigmoid(image), "weights_sum": torch.ones(1, side, side, 1)}
    cond = Image.fromarray((np.random.default_rng(0).random((side, side, 3)) * 255).astype(np.uint8))
    steps = []
    for step in range(1, STEPS + 1):
        tr.train_step = step
        data = {"azimuth": torch.tensor([30.0 * step]), "elevation": torch.tensor([90.0]), "cond_images": [cond],
                "body_part": "body"}  # fmt: skip
        loss, _, sd_outputs, text = tr.train_forward(data)
        optimizer.zero_grad()
        tr.scaler.scale(loss).backward()
        tr.scaler.step(optimizer)
        tr.scaler.update()
        steps.append(types.SimpleNamespace(t=sd_outputs["timestep"].tolist(), text=text,
                                           stats=getattr(tr.diffusion, "last_stats", None)))  # fmt: skip
    return tr, image.detach(), steps


@pytest.mark.parametrize("flags", [(), ("--guide.sds_loss_type", "nfsd"), ("--guide.sds_weight_type", "dreamfusion")])
def test_their_runs_unchanged_by_the_swap(trainers, flags):
    (_, theirs, steps_theirs), (tr, ours, steps_ours) = train(trainers[0], *flags), train(trainers[1], *flags)
    assert type(tr.diffusion).__module__ == "ssd_toolkit.integrations.dreamwaltz_g.classes"
    assert [s.t for s in steps_theirs] == [s.t for s in steps_ours] and torch.equal(theirs, ours)


def test_ssd_with_M_from_the_command_line(trainers):
    tr, image, steps = train(trainers[1], "--guide.sds_loss_type", "ssd", "--guide.ssd_M", "500")
    assert tr.cfg.guide.ssd_M == 500.0 and tr.diffusion.ssd_M == 500.0
    assert [bool(s.stats["mode_seeking"][0]) for s in steps] == [s.t[0] <= 500 for s in steps]
    _, sds_image, _ = train(trainers[1])
    assert torch.isfinite(image).all() and not torch.equal(image, sds_image)


@pytest.mark.parametrize("flags", [("--guide.sds_loss_type", "ism", "--guide.sds_weight_type", "ism"),
                                   ("--guide.sds_loss_type", "ssd", "--guide.use_controlnet", "False"),
                                   ("--guide.sds_loss_type", "ssd", "--guide.diffusion", "sdxl10",
                                    "--guide.controlnet", "sdxl10")])  # fmt: skip
def test_our_loss_types_train(trainers, flags):
    _, image, _ = train(trainers[1], *flags)
    assert torch.isfinite(image).all() and image.abs().max() > 0


def test_their_sdxl_run_fails_at_the_first_step(trainers):
    with pytest.raises(IndexError):
        train(trainers[0], "--guide.diffusion", "sdxl10", "--guide.controlnet", "sdxl10")
