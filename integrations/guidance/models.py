"""Load Stable Diffusion + an openpose ControlNet with diffusers/transformers ``from_pretrained``.

Works with a hub id (downloaded or already in the Hugging Face cache) or a local directory
in the diffusers layout (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``); ``tiny.build_tiny_pipeline`` writes such a directory for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# "runwayml/stable-diffusion-v1-5" (DreamWaltz's default) was taken down from the hub in
# 2024; the same weights live on under this id.
DEFAULT_SD_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_CONTROLNET = "lllyasviel/sd-controlnet-openpose"
MIN_TOKENIZER_SIZE = 258  # 256 byte tokens + start/end: the smallest usable CLIP vocabulary
INSTALL_HINT = 'pip install "ssd_toolkit[avatar]"'


@dataclass
class GuidanceModels:
    """The frozen networks one guidance module needs (all in eval mode, no gradients).

    Attributes:
        tokenizer: ``transformers.CLIPTokenizer``.
        text_encoder: ``transformers.CLIPTextModel``.
        vae: ``diffusers.AutoencoderKL``.
        unet: ``diffusers.UNet2DConditionModel``.
        controlnet: ``diffusers.ControlNetModel``, or None (plain SD guidance).
        scheduler: ``diffusers.DDPMScheduler`` (its ``alphas_cumprod`` is the schedule).
        device: ``torch.device`` the networks are on.
        dtype: their ``torch.dtype`` (float32 or float16).
    """

    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    controlnet: Any
    scheduler: Any
    device: Any
    dtype: Any


def _require():
    try:
        import diffusers  # noqa: PLC0415
        import torch  # noqa: PLC0415
        import transformers  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(f"ControlNet guidance needs torch, diffusers and transformers: {INSTALL_HINT}") from exc
    return torch, diffusers, transformers


def _resolve_dtype(torch, dtype):
    if isinstance(dtype, str):
        named = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16}
        if dtype not in named:
            raise ValueError(f"dtype: expected one of {sorted(named)} or a torch dtype, got {dtype!r}")
        return named[dtype]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype: expected torch.float32, torch.float16 or torch.bfloat16, got {dtype!r}")
    return dtype


def _load(what, loader, source, subfolder=None, **kwargs):
    """``loader.from_pretrained`` with an error that says what was tried and what to do."""
    args = {"subfolder": subfolder} if subfolder else {}
    try:
        return loader.from_pretrained(source, **args, **kwargs)
    except (OSError, EnvironmentError) as exc:
        where = f"{source!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
        detail = " ".join(str(exc).split())  # one line: the CLIs print the first line only
        raise OSError(
            f"{what}: could not load {loader.__name__} from {where}; "
            "a hub id needs network access or the Hugging Face cache (HF_HUB_OFFLINE=1 forbids "
            "downloads); to run offline pass a local directory in the diffusers layout instead, "
            "e.g. one written by `save_pretrained` or `hf download <id> --local-dir DIR` "
            f"({type(exc).__name__}: {detail})"
        ) from exc


def load_models(
    sd_model=DEFAULT_SD_MODEL,
    controlnet=DEFAULT_CONTROLNET,
    device="cpu",
    dtype="float32",
):
    """Load tokenizer, text encoder, VAE, UNet, ControlNet and DDPM scheduler.

    Args:
        sd_model: hub id or local directory of a Stable Diffusion 1.x/2.x checkpoint in the
            diffusers layout. DreamWaltz's ``runwayml/stable-diffusion-v1-5`` is served as
            ``stable-diffusion-v1-5/stable-diffusion-v1-5`` (the default).
        controlnet: hub id or local directory of a ControlNet (default the SD 1.5 openpose
            ControlNet DreamWaltz uses; DreamWaltz-G uses
            ``lllyasviel/control_v11p_sd15_openpose``), or None for no ControlNet.
        device: torch device for the networks.
        dtype: ``torch.float32`` / ``torch.float16`` / ``torch.bfloat16`` or
            ``"float32"``/``"float16"``; the weights' dtype (estimator arithmetic stays in
            float32 in ``guidance``).

    Returns:
        ``GuidanceModels`` with every network frozen (``requires_grad_(False)``, eval).

    Raises:
        ImportError: torch/diffusers/transformers missing (with the install command).
        OSError: a model cannot be loaded; the message names the source and subfolder
            tried and how to pass a local directory instead.
        ValueError: unsupported dtype.
    """
    torch, diffusers, transformers = _require()
    dtype = _resolve_dtype(torch, dtype)
    device = torch.device(device)
    sd_model = str(sd_model)
    text_encoder = _load("sd_model", transformers.CLIPTextModel, sd_model, "text_encoder", torch_dtype=dtype)
    tokenizer = _load("sd_model", transformers.CLIPTokenizer, sd_model, "tokenizer")
    if len(tokenizer) < MIN_TOKENIZER_SIZE:
        # transformers 5 returns a near-empty tokenizer instead of raising when the files are missing
        raise OSError(
            f"sd_model: the tokenizer in {sd_model!r} (subfolder 'tokenizer') has {len(tokenizer)} tokens, "
            f"expected at least {MIN_TOKENIZER_SIZE} (a byte-level CLIP vocabulary); its vocab.json/merges.txt "
            "are missing or empty. Pass a local directory with a complete tokenizer/ folder."
        )
    vae = _load("sd_model", diffusers.AutoencoderKL, sd_model, "vae", torch_dtype=dtype)
    unet = _load("sd_model", diffusers.UNet2DConditionModel, sd_model, "unet", torch_dtype=dtype)
    scheduler = _load("sd_model", diffusers.DDPMScheduler, sd_model, "scheduler")
    control = None if controlnet is None else load_controlnet(controlnet, device=device, dtype=dtype)
    for net in (text_encoder, vae, unet):
        _freeze(net, device)
    return GuidanceModels(tokenizer, text_encoder, vae, unet, control, scheduler, device, dtype)


def _freeze(net, device):
    net.to(device)  # dtype already set by torch_dtype
    net.requires_grad_(False)
    net.eval()
    return net


def load_controlnet(source, device="cpu", dtype="float32"):
    """One ``diffusers.ControlNetModel`` from a hub id or local directory, frozen on ``device``.

    Raises:
        ImportError / OSError / ValueError: as ``load_models``.
    """
    torch, diffusers, _ = _require()
    dtype = _resolve_dtype(torch, dtype)
    net = _load("controlnet", diffusers.ControlNetModel, str(source), torch_dtype=dtype)
    return _freeze(net, torch.device(device))


def load_sampling_scheduler(sd_model):
    """The scheduler class the checkpoint names (``scheduler/scheduler_config.json``'s
    ``_class_name``, e.g. PNDM for SD 1.5), for image sampling through diffusers pipelines.

    Raises:
        OSError: no scheduler config (``load_models`` on the same source explains it).
    """
    _, diffusers, _ = _require()
    config = diffusers.DDPMScheduler.load_config(str(sd_model), subfolder="scheduler")
    cls = getattr(diffusers, str(config.get("_class_name", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        cls = diffusers.DDPMScheduler
    return cls.from_config(config)
