"""Stand-ins that let DreamWaltz-G's own guidance run offline on CPU, for the tests that
need their checkout (``DREAMWALTZ_G_DIR``) and for scripts/dreamwaltz_g_check.py.

- ``hub_cache``: a Hugging Face cache in which the tiny random pipelines sit under the hub
  ids DreamWaltz-G loads (``stable-diffusion-v1-5/stable-diffusion-v1-5``,
  ``lllyasviel/control_v11p_sd15_openpose``, ``stabilityai/stable-diffusion-xl-base-1.0``,
  ``thibaud/controlnet-openpose-sdxl-1.0``), so their ``from_pretrained`` calls run
  unchanged with ``HF_HUB_OFFLINE=1``.
- ``guide_config``: their ``GuideConfig`` with the fields the tests vary.
"""

from __future__ import annotations

import os
import shutil
import types
from pathlib import Path

SD15, SD15_POSE = "stable-diffusion-v1-5/stable-diffusion-v1-5", "lllyasviel/control_v11p_sd15_openpose"
SDXL, SDXL_POSE = "stabilityai/stable-diffusion-xl-base-1.0", "thibaud/controlnet-openpose-sdxl-1.0"
SNAPSHOT = "0" * 40


def _cache_model(hub, repo_id, source):
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    target = repo / "snapshots" / SNAPSHOT
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("controlnet"))


def hub_cache(root):
    """Write the tiny SD 1.5 and SDXL pipelines into ``<root>/hub`` under DreamWaltz-G's
    hub ids; returns ``root`` (use it as ``HF_HOME``, with ``HF_HUB_OFFLINE=1``)."""
    from ssd_toolkit.integrations.dreamwaltz_g.tiny_xl import build_tiny_sdxl  # noqa: PLC0415
    from ssd_toolkit.integrations.guidance.tiny import build_tiny_pipeline  # noqa: PLC0415

    root = Path(root)
    hub = root / "hub"
    sd, xl = build_tiny_pipeline(root / "tiny_sd15"), build_tiny_sdxl(root / "tiny_sdxl")
    for repo_id, source in ((SD15, sd), (SD15_POSE, sd / "controlnet"), (SDXL, xl), (SDXL_POSE, xl / "controlnet")):
        _cache_model(hub, repo_id, source)
    return root


def offline_env(root):
    """The environment variables that point diffusers at ``hub_cache(root)``."""
    return {"HF_HOME": str(root), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_CACHE": str(Path(root) / "hub"), "HUGGINGFACE_HUB_CACHE": str(Path(root) / "hub")}


def offline_pipelines():
    """diffusers (0.24, DreamWaltz-G's pin) asks the hub for a pipeline's file list before
    it reads the cache, and falls back to the cache only on an HTTP error; make that query
    fail as an unreachable hub would, so ``DiffusionPipeline.from_pretrained`` reads the cache."""
    import diffusers.pipelines.pipeline_utils as pipeline_utils  # noqa: PLC0415
    import requests  # noqa: PLC0415

    def model_info(*args, **kwargs):
        raise requests.HTTPError("offline stand-in: no hub")

    pipeline_utils.model_info = model_info


def dreamwaltz_g_dir():
    """DreamWaltz-G's checkout from ``DREAMWALTZ_G_DIR``, or None."""
    path = os.environ.get("DREAMWALTZ_G_DIR")
    return Path(path) if path and (Path(path) / "core" / "guidance" / "basic.py").is_file() else None


def stub_torchvision():
    """Empty ``torchvision``, ``torchvision.transforms`` and ``torchvision.utils`` modules:
    DreamWaltz-G's vendored ISM code imports them at module level and never uses them on
    the guidance path; a real torchvision does not install beside the CPU torch here.
    Import transformers and diffusers first (they probe for torchvision)."""
    import sys  # noqa: PLC0415

    if "torchvision" in sys.modules:
        return
    root = types.ModuleType("torchvision")
    for sub in ("transforms", "utils"):
        module = types.ModuleType(f"torchvision.{sub}")
        setattr(root, sub, module)
        sys.modules[module.__name__] = module
    sys.modules["torchvision.utils"].save_image = None
    sys.modules["torchvision"] = root


# Packages their core/trainer.py pulls in at import (3D, CUDA, mesh tools) that none of the
# trainer functions the trainer test runs use; stood in by empty modules
TRAINER_ONLY_IMPORTS = (
    "pytorch3d", "pytorch3d.renderer", "pytorch3d.renderer.cameras", "pytorch3d.transforms",
    "pytorch3d.transforms.rotation_conversions", "jaxtyping", "human_body_prior", "human_body_prior.models",
    "human_body_prior.models.vposer_model", "cv2", "nvdiffrast", "nvdiffrast.torch", "trimesh", "open3d", "igl",
)  # fmt: skip


class EmptyModule(types.ModuleType):
    """A module whose every public attribute is None (import-time use only)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def trainer_import_stubs():
    """``{name: EmptyModule}`` for ``TRAINER_ONLY_IMPORTS`` not importable here, to put in
    ``sys.modules`` (a monkeypatch) before importing their ``core.trainer``."""
    import importlib.util  # noqa: PLC0415

    roots = {name.split(".")[0] for name in TRAINER_ONLY_IMPORTS if importlib.util.find_spec(name.split(".")[0]) is None}
    return {name: EmptyModule(name) for name in TRAINER_ONLY_IMPORTS if name.split(".")[0] in roots}


SWAPPED_IMPORTS = (  # docs/integrations/dreamwaltz-g.md: the change in Trainer.init_diffusion
    ("            from core.guidance.stable_diffusion import ScoreDistillation\n"
     "            from core.guidance.controlnet import ControlNetScoreDistillation\n",
     "            from ssd_toolkit.integrations.dreamwaltz_g import ScoreDistillation, ControlNetScoreDistillation\n"),
    ("            from core.guidance.stable_diffusion import ScoreDistillationXL as ScoreDistillation\n"
     "            from core.guidance.controlnet import ControlNetScoreDistillationXL as ControlNetScoreDistillation\n",
     "            from ssd_toolkit.integrations.dreamwaltz_g import (\n"
     "                ScoreDistillationXL as ScoreDistillation, ControlNetScoreDistillationXL as ControlNetScoreDistillation)\n"),
    ("from configs import TrainConfig\n",
     "from configs import TrainConfig\nimport ssd_toolkit.integrations.dreamwaltz_g  # guide.ssd_M before pyrallis parses\n"),
)  # fmt: skip


def swapped_trainer_source(repo):
    """Their core/trainer.py with the documented change applied (for a copy outside both repos).

    Raises:
        ValueError: their file no longer has the lines the docs say to change.
    """
    text = (Path(repo) / "core" / "trainer.py").read_text()
    for old, new in SWAPPED_IMPORTS:
        if text.count(old) != 1:
            raise ValueError(f"core/trainer.py: expected the lines {old!r} once, found {text.count(old)}")
        text = text.replace(old, new)
    return text


def guide_config(configs_module, sdxl=False, **fields):
    """Their ``GuideConfig`` for the tiny pipelines on CPU; ``fields`` override its defaults."""
    base = {"diffusion": "sdxl10", "controlnet": "sdxl10"} if sdxl else {}
    return configs_module.GuideConfig(**{**base, **fields})
