"""A tiny random Stable-Diffusion-like model set, for offline tests and smoke runs.

``build_tiny_pipeline(path)`` writes, with ``save_pretrained``, the diffusers layout of an
SD 1.x checkpoint (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``) plus an openpose-style ``controlnet/`` directory, all random
and a few MB in total. It loads back through the same ``from_pretrained`` paths as the real
models (``models.load_models(path, path + "/controlnet")``, or a diffusers pipeline's
``from_pretrained(path)``). Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

TOKEN_LENGTH = 77
HIDDEN = 32
SAMPLE_SIZE = 8  # latent side: a 64x64 RGB image (8x VAE downscale)
INSTALL_HINT = 'pip install "ssd_toolkit[avatar]"'


def _require_diffusers():
    try:
        import diffusers  # noqa: PLC0415
        import transformers  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(f"the tiny pipeline needs diffusers and transformers: {INSTALL_HINT}") from exc
    return diffusers, transformers


def _byte_characters():
    """The 256 printable characters GPT-2/CLIP byte-level BPE uses for the 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1)]
    printable += range(ord("\u00ae"), ord("\u00ff") + 1)
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _byte_vocab():
    """CLIP-style byte-level vocabulary: the 256 byte characters and their ``</w>`` forms."""
    chars = _byte_characters()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}


def _write_tokenizer(directory: Path):
    """An offline CLIPTokenizer from a written vocab.json + merges.txt (no merges)."""
    from transformers import CLIPTokenizer  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.json"
    merges_file = directory / "merges.txt"
    vocab_file.write_text(json.dumps(_byte_vocab()))
    merges_file.write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=TOKEN_LENGTH)
    tokenizer.save_pretrained(str(directory))
    return len(tokenizer)


def unzero_controlnet(torch, controlnet, std=0.1):
    """Give the zero-initialised convolutions random weights, as training would.

    A fresh ControlNet's ``controlnet_cond_embedding.conv_out``, down-block and mid-block
    projections start at zero, so its residuals are exactly zero and the condition
    image could not change anything; a trained one (like the openpose ControlNet) has
    non-zero weights there.
    """
    zero_convs = [controlnet.controlnet_cond_embedding.conv_out, controlnet.controlnet_mid_block]
    zero_convs += list(controlnet.controlnet_down_blocks)
    with torch.no_grad():
        for conv in zero_convs:
            torch.nn.init.normal_(conv.weight, std=std)


def build_tiny_pipeline(path, seed: int = 0):
    """Write a tiny random SD 1.x-like model set and a ControlNet in the diffusers layout.

    Args:
        path: directory to create (parents too); existing files are overwritten.
        seed: ``torch.manual_seed`` for the random weights (the same seed gives the same
            weights).

    Returns:
        ``pathlib.Path`` of the directory. Its ``controlnet/`` subdirectory is the
        ControlNet (``ControlNetModel.from_unet`` of the UNet, its zero convolutions
        randomised so the condition image matters). Latents are
        ``[B, 4, 8, 8]`` for 64x64 images (``unet.config.sample_size`` 8, VAE 8x
        downscale), text embeddings ``[B, 77, 32]``; the scheduler is SD's
        scaled-linear DDPM schedule (1000 steps, betas 0.00085..0.012).

    Raises:
        ImportError: diffusers/transformers missing (with the install command).
    """
    diffusers, transformers = _require_diffusers()
    import torch  # noqa: PLC0415

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    vocab_size = _write_tokenizer(root / "tokenizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = diffusers.UNet2DConditionModel(
            sample_size=SAMPLE_SIZE,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=HIDDEN,
            attention_head_dim=4,
        )
        controlnet = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 32, 32))
        unzero_controlnet(torch, controlnet)
        vae = diffusers.AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            norm_num_groups=4,
            latent_channels=4,
            sample_size=SAMPLE_SIZE * 8,
            scaling_factor=0.18215,
        )
        text_config = transformers.CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TOKEN_LENGTH,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
        text_encoder = transformers.CLIPTextModel(text_config)
    # SD 1.5's schedule and sampling settings (steps_offset 1, no sample clipping)
    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, clip_sample=False,
    )
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(root / "tokenizer"))
    pipeline = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(str(root))  # every component + model_index.json
    controlnet.save_pretrained(str(root / "controlnet"))
    return root
