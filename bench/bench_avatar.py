"""Avatar-run speed at Stable Diffusion 1.5 size: one guidance step and one full training step.

The networks are random, built from the SD 1.5 configs written below (UNet 860M
parameters, its openpose-style ControlNet from ``ControlNetModel.from_unet``, the SD VAE,
a CLIP ViT-L/14-sized text encoder), so nothing is downloaded; speed and memory do not
depend on the weights' values.

Measured per batch size B:

- guidance step: ``ControlNetGuidance.guide`` on ``[B, 4, 64, 64]`` latents and
  ``[B, 3, 512, 512]`` skeleton conditions (one ControlNet + UNet call on the 2B stacked
  batch, the SSD estimator, the weighting);
- training step: ``Trainer.step_once`` (camera sampling, latent-field rendering with 64
  samples per ray, skeleton drawing, view prompts, the guidance step, backward, Adam);
- the estimator alone on the same ``[B, 4, 64, 64]`` float32 tensors: the fused kernel
  (``backend="auto"``: the compiled CUDA/CPU kernel when built) and PyTorch eager ops
  (``backend="torch"``), and its share of the guidance step.

Reference: DreamWaltz reports about 1 hour for 30k iterations of a canonical avatar on an
RTX 3090 at batch 1, i.e. ~120 ms per iteration (~8.3 it/s).

GPU (the measurement that matters; writes bench/results/avatar_<gpu>.{json,md})::

    python bench/bench_avatar.py                       # cuda, fp16, batch 1 4 8
    python bench/bench_avatar.py --dry-run             # arguments and imports only, no networks

CPU smoke of the same code (fp32; an SD-size UNet on 2 cores takes tens of seconds)::

    python bench/bench_avatar.py --device cpu --batch 1 --steps 2 [--only guidance]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

import ssd_toolkit
from common import gpu_info, gpu_slug, machine_info, median_time, torch_device, write_results

DREAMWALTZ_SECONDS_PER_ITER = 3600.0 / 30000  # 30k iterations in about an hour, RTX 3090, batch 1

SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
SD15_CONTROLNET_EMBEDDING = (16, 32, 96, 256)  # lllyasviel/sd-controlnet-openpose
SD15_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD15_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
             "max_position_embeddings": 77, "vocab_size": 49408, "projection_dim": 768}


def build_sd15_guidance(device, dtype, seed=0):
    """A ``ControlNetGuidance`` over random SD 1.5-sized networks (SSD, M = 200)."""
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ssd_toolkit.integrations.avatar.quiet import quiet_third_party
    from ssd_toolkit.integrations.guidance.controlnet import ControlNetGuidance
    from ssd_toolkit.integrations.guidance.models import GuidanceModels
    from ssd_toolkit.integrations.guidance.tiny import build_tiny_pipeline

    torch.manual_seed(seed)
    with torch.device(device):  # random initialisation on the device: seconds on a GPU, not minutes
        unet = UNet2DConditionModel(**SD15_UNET)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=SD15_CONTROLNET_EMBEDDING)
        vae = AutoencoderKL(**SD15_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
    with tempfile.TemporaryDirectory() as tmp:  # an offline byte-level CLIP tokenizer
        tokenizer = CLIPTokenizer.from_pretrained(str(build_tiny_pipeline(Path(tmp) / "tiny") / "tokenizer"))
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    nets = (unet, controlnet, vae, text_encoder)
    kept = sorted({m for net in nets for m in (getattr(net, "_keep_in_fp32_modules", None) or [])})
    with quiet_third_party():  # diffusers warns once per network, even with an empty list
        for net in nets:
            net.to(device=device, dtype=dtype).requires_grad_(False).eval()
    if kept and dtype != torch.float32:
        print(f"note: diffusers would keep these modules in float32; .to({dtype}) casts them: {kept}")
    models = GuidanceModels(tokenizer, text_encoder, vae, unet, controlnet, scheduler, torch.device(device), dtype)
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in zip(("unet", "controlnet", "vae", "text"), nets)}
    return ControlNetGuidance(models, estimator="ssd", estimator_params={"M": 200.0}, seed=seed), params


def build_trainer(guidance, batch, device, amp, body_dir):
    from ssd_toolkit.integrations.avatar import config
    from ssd_toolkit.integrations.avatar.run import load_body
    from ssd_toolkit.integrations.avatar.train import Trainer

    cfg = config.AvatarConfig(prompt="a wooden robot", body=str(body_dir), batch=batch, steps=30000)
    return Trainer(cfg, guidance, load_body(cfg), device, amp)


def peak_bytes(device):
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def estimator_times(batch, device, warmup, repeats, sync):
    """Seconds of the SSD estimator on ``[B, 4, 64, 64]`` float32: fused kernel and eager."""
    g = torch.Generator(device="cpu").manual_seed(0)
    c, u, n = (torch.randn((batch, 4, 64, 64), generator=g).to(device) for _ in range(3))
    t = torch.linspace(20, 980, batch).round().to(device)
    out = {}
    backends = ssd_toolkit.backends()
    fused = backends["cuda"] if device.type == "cuda" else backends["cpu"]
    if fused:
        out["fused"] = median_time(lambda: ssd_toolkit.estimate(c, u, n, t, 200.0), warmup, repeats, sync)["median_s"]
    out["eager"] = median_time(lambda: ssd_toolkit.estimate(c, u, n, t, 200.0, backend="torch"), warmup, repeats, sync)["median_s"]
    return out


def bench_batch(guidance, batch, device, dtype, args, body_dir, sync):
    amp = dtype == torch.float16
    row = {"batch": batch, "device": str(device), "dtype": str(dtype).replace("torch.", "")}
    g = torch.Generator(device="cpu").manual_seed(1)
    latents = torch.randn((batch, 4, 64, 64), generator=g).to(device)
    conditions = torch.rand((batch, 3, 512, 512), generator=g).to(device)
    text = guidance.encode_prompts(["front view of a wooden robot"] * batch)
    uncond = guidance.encode_prompts([""] * batch)
    if args.only in ("guidance", "both"):
        reset_peak(device)
        timing = median_time(lambda: guidance.guide(latents, text, uncond, conditions, train_step=0),
                             args.warmup, args.steps, sync)
        row["guidance_ms"] = 1e3 * timing["median_s"]
        row["guidance_peak_mib"] = peak_bytes(device) / 2**20
        est = estimator_times(batch, device, args.warmup, max(args.steps, 5), sync)
        for name, seconds in est.items():
            row[f"estimator_{name}_ms"] = 1e3 * seconds
            row[f"estimator_{name}_share"] = seconds / timing["median_s"]
    if args.only in ("train", "both"):
        trainer = build_trainer(guidance, batch, device, amp, body_dir)
        reset_peak(device)
        timing = median_time(trainer.step_once, args.warmup, args.steps, sync)
        row["train_ms"] = 1e3 * timing["median_s"]
        row["train_it_s"] = 1.0 / timing["median_s"]
        row["train_peak_mib"] = peak_bytes(device) / 2**20
        row["samples_per_s"] = batch / timing["median_s"]
        row["hours_for_30k_iters"] = 30000 * timing["median_s"] / 3600
        row["vs_dreamwaltz_per_iter"] = timing["median_s"] / DREAMWALTZ_SECONDS_PER_ITER
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--steps", type=int, default=10, help="timed repeats per measurement (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", choices=("guidance", "train", "both"), default="both")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--name", default=None, help="results file stem (default avatar_<gpu name> or avatar_cpu)")
    parser.add_argument("--out-dir", default=None, help="where the results files go (default bench/results)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the arguments, the packages, and build the networks on the meta device only")
    args = parser.parse_args(argv)
    for name in ("steps", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name}: expected a positive integer, got {value}")
    if args.warmup < 0 or min(args.batch) < 1:
        parser.error(f"--warmup, --batch: expected warmup >= 0 and batches >= 1, got {args.warmup} and {args.batch}")
    if args.dry_run:
        return dry_run(args, parser)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch_device(parser, args.device, torch)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    machine = machine_info()
    machine["loadavg_start"] = machine["loadavg_1_5_15"]
    if device.type == "cuda":
        machine.update(gpu_info(torch))
    built = time.perf_counter()
    guidance, n_params = build_sd15_guidance(device, dtype)
    build_s = time.perf_counter() - built
    print(f"built SD 1.5-size random networks in {build_s:.1f} s: {n_params}", file=sys.stderr)
    from ssd_toolkit.integrations.avatar.body.synthetic import write_synthetic_smpl

    rows = []
    with tempfile.TemporaryDirectory() as body_dir:
        write_synthetic_smpl(body_dir)
        for batch in args.batch:
            rows.append(bench_batch(guidance, batch, device, dtype, args, body_dir, sync))
            print(rows[-1], file=sys.stderr)
    machine.update(machine_info())
    machine["loadavg_start"] = machine.get("loadavg_start")
    columns = [("batch", "B", "{}"), ("dtype", "dtype", "{}")]
    if args.only in ("guidance", "both"):
        columns += [("guidance_ms", "guidance step ms", "{:.1f}"), ("guidance_peak_mib", "peak MiB", "{:.0f}")]
        if "estimator_fused_ms" in rows[0]:
            columns += [("estimator_fused_ms", "SSD fused ms", "{:.3f}"), ("estimator_fused_share", "fused share", "{:.2e}")]
        columns += [("estimator_eager_ms", "SSD eager ms", "{:.3f}"), ("estimator_eager_share", "eager share", "{:.2e}")]
    if args.only in ("train", "both"):
        columns += [("train_ms", "train step ms", "{:.1f}"), ("train_it_s", "it/s", "{:.3f}"),
                    ("train_peak_mib", "train peak MiB", "{:.0f}"), ("hours_for_30k_iters", "h / 30k it", "{:.2f}"),
                    ("vs_dreamwaltz_per_iter", "x DreamWaltz s/it", "{:.2f}")]
    params = {"device": str(device), "dtype": str(dtype), "batch": args.batch, "steps": args.steps,
              "warmup": args.warmup, "only": args.only, "torch_threads": torch.get_num_threads(),
              "latents": "[B, 4, 64, 64]", "conditions": "[B, 3, 512, 512]", "samples_per_ray": 64,
              "network_params": n_params, "build_s": round(build_s, 1)}
    notes = ("Random SD 1.5-size weights (configs in bench/bench_avatar.py). DreamWaltz reference: 30k iterations "
             "in ~1 h on an RTX 3090 at batch 1 = 0.12 s/iteration. "
             + ("CPU numbers: fp32 on a shared 2-core machine, a smoke test of the code path only, not comparable "
                "with the GPU reference." if device.type == "cpu" else ""))
    default_name = f"avatar_{gpu_slug(machine['gpu'])}" if device.type == "cuda" else f"avatar_{device.type}"
    print(write_results(args.name or default_name, rows, columns, params, machine, notes, out_dir=args.out_dir))
    return 0


def dry_run(args, parser):
    """Arguments, the packages, and the SD 1.5-size guidance built on the meta device (its
    configs and wiring with the installed diffusers/transformers; no memory, no compute)."""
    import importlib.util  # noqa: PLC0415

    try:
        torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device: expected a torch device such as cuda or cpu, got {args.device!r}")
    missing = [m for m in ("diffusers", "transformers", "smplx", "ssd_toolkit.integrations.avatar")
               if importlib.util.find_spec(m) is None]
    print(f"bench_avatar dry run: device {args.device}, batches {args.batch}, {args.warmup} warm-up + {args.steps} "
          f"timed steps, measuring {args.only}; SD 1.5 UNet blocks {SD15_UNET['block_out_channels']}")
    if missing:
        print("bench_avatar: not installed: " + ", ".join(missing), file=sys.stderr)
        return 1
    _, n_params = build_sd15_guidance("meta", torch.float16)  # configs and wiring, no memory, no compute
    print(f"bench_avatar dry run: the guidance builds on the meta device: {n_params}")
    return 0


def quiet_main(argv=None):
    """``main`` with the third-party warnings and bars of diffusers/transformers silenced."""
    from ssd_toolkit.integrations.avatar.quiet import quiet_third_party  # noqa: PLC0415

    with quiet_third_party():
        return main(argv)


if __name__ == "__main__":
    sys.exit(quiet_main())
