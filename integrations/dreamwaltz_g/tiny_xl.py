"""A tiny random SDXL-like model set + ControlNet, for offline tests and smoke runs.

``build_tiny_sdxl(path)`` writes the diffusers layout of an SDXL checkpoint
(``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``text_encoder_2/``,
``tokenizer/``, ``tokenizer_2/``, ``scheduler/``; also as an ``fp16`` variant, which
DreamWaltz-G asks SDXL for) plus ``controlnet/``, all random and a few MB. The
UNet has SDXL's ``text_time`` added conditioning (pooled text + 6 size/crop ids); the
tokenizers are the offline byte-level CLIP tokenizer of ``guidance.tiny``. Nothing is
downloaded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..guidance.tiny import TOKEN_LENGTH, unzero_controlnet, build_tiny_pipeline

HIDDEN = 32  # each text encoder's width; the UNet cross-attends to both, concatenated (64)
TIME_EMBED = 8  # addition_time_embed_dim: 6 ids x 8 + pooled 32 = 80 projection inputs
SAMPLE_SIZE = 8  # latent side: a 64x64 RGB image


def _text_config(transformers, vocab_size):
    return transformers.CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=TOKEN_LENGTH, projection_dim=HIDDEN,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )  # fmt: skip


def build_tiny_sdxl(path, seed: int = 0):
    """Write a tiny random SDXL-like model set and a ControlNet in the diffusers layout.

    Args:
        path: directory to create (parents too); existing files are overwritten.
        seed: ``torch.manual_seed`` for the random weights.

    Returns:
        ``pathlib.Path`` of the directory; ``controlnet/`` holds the ControlNet
        (``ControlNetModel.from_unet``, zero convolutions randomised). Latents
        ``[B, 4, 8, 8]`` for 64x64 images, prompt embeddings ``[B, 77, 64]``, pooled
        ``[B, 32]``; the scheduler is SDXL's Euler one on SD's scaled-linear betas.

    Raises:
        ImportError: diffusers/transformers missing.
    """
    import diffusers  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:  # the offline tokenizer, written by guidance.tiny
        build_tiny_pipeline(scratch, seed=seed)
        tokenizer = transformers.CLIPTokenizer.from_pretrained(str(Path(scratch) / "tokenizer"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = diffusers.UNet2DConditionModel(
            sample_size=SAMPLE_SIZE, in_channels=4, out_channels=4, block_out_channels=(32, 64),
            layers_per_block=1, norm_num_groups=32, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED,
            projection_class_embeddings_input_dim=6 * TIME_EMBED + HIDDEN, cross_attention_dim=2 * HIDDEN,
        )  # fmt: skip
        controlnet = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 32, 32))
        unzero_controlnet(torch, controlnet)
        vae = diffusers.AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
            norm_num_groups=4, latent_channels=4, sample_size=SAMPLE_SIZE * 8, scaling_factor=0.13025,
        )  # fmt: skip
        text_encoder = transformers.CLIPTextModel(_text_config(transformers, len(tokenizer)))
        text_encoder_2 = transformers.CLIPTextModelWithProjection(_text_config(transformers, len(tokenizer)))
    scheduler = diffusers.EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, timestep_spacing="leading",
    )  # fmt: skip
    pipeline = diffusers.StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
    )  # fmt: skip
    pipeline.save_pretrained(str(root))
    pipeline.save_pretrained(str(root), variant="fp16")  # same weights under the fp16 variant's file names
    controlnet.save_pretrained(str(root / "controlnet"))
    return root
