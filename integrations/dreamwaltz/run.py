"""``run_avatar``: one canonical-avatar run from resolved settings to turntable and metrics.

Order matters for safety (``prepare_run``): every input is checked (settings, output
directory, dependencies, body model, networks, on resume the checkpoint and its settings)
before anything in the output directory changes, so a failed or interrupted start never
spoils a later ``--resume``, and a failed fresh start leaves no output directory behind.
The output directory is locked for the whole run (``outdir.OutputLock``); temporary files
of killed runs are removed once the lock is held. Checkpoints, config and logs are written
atomically; ``execute_run`` trains and writes the results.

Outputs in ``cfg.out``::

    .lock                held while a run uses the directory
    config.json          the resolved settings (re-run with --config)
    log.jsonl            one record per step (loss, reg, grad_norm, t_mean, branch fractions)
    checkpoints/last.pt  the latest checkpoint (resume with --resume)
    previews/step_NNNNNN.png  decoded RGB (top) over the skeleton conditions (bottom)
    turntable.gif / turntable.mp4 / turntable/NNN.png
    metrics.json         steps, wall time, it/s, peak memory, final loss
    SMOKE_RUN.txt        only for --tiny: the images are meaningless
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import config as config_mod
from .checkpoint import CHECKPOINT_NAME, atomic_write_bytes
from .outdir import OutputLock, check_output_location, remove_stale_temporaries

SMOKE_NOTE = (
    "SMOKE RUN (--tiny): random tiny networks and a synthetic body. It exercises the whole "
    "pipeline; its images, turntable and losses carry no meaning.\n"
)


@dataclasses.dataclass
class RunResult:
    """What ``run_avatar`` returns: the metrics dict and the output directory."""

    metrics: dict
    out: Path


def _pick_device(cfg):
    if cfg.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = cfg.device
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: expected a usable device, got 'cuda' but torch.cuda.is_available() is False")
    amp = cfg.precision == "fp16" or (cfg.precision == "auto" and device == "cuda")
    if amp and device != "cuda":
        raise ValueError(f"precision: 'fp16' needs a CUDA device, got device {device!r}")
    return torch.device(device), amp


def _build_once(target: Path, build):
    """Run ``build(tmp_dir)`` and rename the result to ``target`` unless it exists."""
    if target.exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def prepare_tiny_assets(cfg, out: Path):
    """Fill ``sd_model``/``controlnet``/``body`` of a ``--tiny`` run with built random assets."""
    from .synthetic import write_synthetic_smpl  # noqa: PLC0415
    from .tiny import build_tiny_pipeline  # noqa: PLC0415

    assets = out / "tiny_assets"
    assets.mkdir(exist_ok=True)
    try:
        if not cfg.sd_model:
            models = _build_once(assets / "models", lambda d: build_tiny_pipeline(d, seed=cfg.seed))
            cfg.sd_model = str(models)
            cfg.controlnet = cfg.controlnet or str(models / "controlnet")
        if not cfg.body:
            cfg.body = str(_build_once(assets / "body", lambda d: write_synthetic_smpl(d, gender=cfg.gender, seed=cfg.seed)))
    except OSError:
        raise
    except Exception as exc:  # safetensors reports a full disk as SafetensorError, not OSError
        if "No space left" in str(exc) or "os error 28" in str(exc) or "code: 28" in str(exc):
            raise OSError(errno.ENOSPC, f"no space left writing the tiny assets in {str(assets)!r} ({exc})") from exc
        raise
    return cfg


def check_body_path(cfg):
    """``cfg.body`` exists (checked before any output is written; --tiny builds its own)."""
    if cfg.body and not Path(cfg.body).exists():
        raise FileNotFoundError(f"body: expected an SMPL/SMPL-X model directory or file, got {cfg.body!r} (does not exist)")


def load_body(cfg):
    """The A-posed body of ``cfg.body``."""
    from .body import load_body_model, posed_body  # noqa: PLC0415

    check_body_path(cfg)
    return posed_body(load_body_model(cfg.body, model_type=cfg.model_type, gender=cfg.gender), preset="A")


def load_guidance_for(cfg, device, amp):
    from .guidance import load_guidance  # noqa: PLC0415

    params = {"M": cfg.M} if cfg.estimator.lower() == "ssd" else {}
    return load_guidance(
        cfg.sd_model, cfg.controlnet or None, device=device, dtype="float16" if amp else "float32",
        estimator=cfg.estimator, estimator_params=params, weighting=cfg.weighting, t_sampler=cfg.t_sampler,
        guidance_scale=cfg.guidance_scale, negative_prompt=cfg.negative_prompt, seed=cfg.seed,
    )


def peak_memory(device) -> dict:
    """Peak memory so far: CUDA ``max_memory_allocated`` on GPU, the process's max RSS on CPU."""
    if device.type == "cuda":
        return {"kind": "cuda_max_memory_allocated", "bytes": int(torch.cuda.max_memory_allocated(device))}
    return {"kind": "cpu_max_rss", "bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024}


def _postfix(record):
    post = {"loss": f"{record['loss']:.4g}", "gnorm": f"{record['grad_norm']:.3g}"}
    if "mode_seeking" in record:
        post["ms/md"] = f"{record['mode_seeking']:.2f}/{record['mode_disengaging']:.2f}"
    return post


@dataclasses.dataclass
class PreparedRun:
    """Everything checked and loaded by ``prepare_run``; holds the output directory's lock."""

    cfg: object
    out: Path
    resume: bool
    device: object
    amp: bool
    body: object
    guidance: object
    trainer: object
    lock: OutputLock
    log: object
    started: float
    log_lines: list  # on resume: the records of log.jsonl up to the checkpoint's step


def _check_inputs(cfg, resume: bool) -> Path:
    """The checks that need no output directory: location, previous run, device, files, drawing."""
    from .openpose import load_openpose_drawing  # noqa: PLC0415

    out = check_output_location(cfg.out)
    checkpoint = out / "checkpoints" / CHECKPOINT_NAME
    if not resume and checkpoint.exists():
        raise ValueError(
            f"out: {str(out)!r} already holds a run ({checkpoint}); pass --resume to continue it or choose another --out"
        )
    if resume and not checkpoint.is_file():
        raise FileNotFoundError(f"--resume: expected a checkpoint at {str(checkpoint)!r}, got none")
    _pick_device(cfg)
    check_body_path(cfg)
    for name in ("sd_model", "controlnet"):  # a local path must exist; anything else is a hub id
        value = getattr(cfg, name)
        if value and (value.startswith((".", "/", "~")) or Path(value).exists()) and not Path(value).expanduser().is_dir():
            raise FileNotFoundError(f"{name}: expected a diffusers model directory or hub id, got {value!r} (no such directory)")
    load_openpose_drawing()  # ImportError with the install command when controlnet_aux is missing
    return out


def prepare_run(cfg, resume: bool = False, progress: bool = True, log=print) -> PreparedRun:
    """Check every input, lock ``cfg.out``, load the networks and body, and (on resume) the
    checkpoint; nothing in ``cfg.out`` is written except the lock and, for --tiny, its assets.

    A fresh run whose preparation fails removes the output directory if it created it.

    Raises:
        ValueError: unwritable or locked output, bad body model type, device/precision
            mismatch, a fresh run into a directory that holds one, a corrupt checkpoint or
            one from other settings (``checkpoint.CheckpointError``).
        FileNotFoundError: missing body file, model directory or (resume) checkpoint.
        ImportError: controlnet_aux's drawing module is missing (with the install command).
        OSError: networks that cannot be loaded; a full disk while building --tiny assets.
    """
    from .train import Trainer, load_resume_state, read_log  # noqa: PLC0415

    started = time.perf_counter()
    out = _check_inputs(cfg, resume)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(out)
    try:
        lock.acquire()
        remove_stale_temporaries(out)
        if resume:  # cheap checks first: checksum, keys, settings, log
            state, state_path = load_resume_state(out / "checkpoints", cfg)
            log_lines = read_log(out / "log.jsonl", int(state["step"]))
        device, amp = _pick_device(cfg)
        if cfg.tiny:
            cfg = prepare_tiny_assets(cfg, out)
            log(SMOKE_NOTE.strip())
        body = load_body(cfg)
        guidance = load_guidance_for(cfg, device, amp)
        down = 2 ** (len(guidance.models.unet.config.block_out_channels) - 1)
        if cfg.latent_size % down:
            raise ValueError(f"latent_size: expected a multiple of {down} (the UNet downsamples {down}x), got {cfg.latent_size}")
        trainer = Trainer(cfg, guidance, body, device, amp)
        if resume:
            trainer.apply_resume_state(state, state_path)
        else:
            log_lines = []
    except BaseException:
        lock.release()
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return PreparedRun(cfg, out, resume, device, amp, body, guidance, trainer, lock, log, started, log_lines)


def run_avatar(cfg, resume: bool = False, progress: bool = True, log=print) -> RunResult:
    """Train a canonical avatar (``prepare_run`` then ``execute_run``); see the module docstring.

    Args:
        cfg: validated ``config.AvatarConfig`` (``config.resolve``).
        resume: continue the run in ``cfg.out`` from ``checkpoints/last.pt``.
        progress: tqdm bars.
        log: function taking one message line.

    Returns:
        ``RunResult``.

    Raises:
        Everything ``prepare_run`` raises, and ``train.NonFiniteError`` (NaN/Inf during
        training; the last good checkpoint stays) or ``KeyboardInterrupt`` (re-raised
        after saying where to resume from).
    """
    return execute_run(prepare_run(cfg, resume, progress, log), progress)


def execute_run(prepared: PreparedRun, progress: bool = True) -> RunResult:
    """Train, preview, checkpoint, render the turntable and write the metrics; releases the lock."""
    try:
        return _train_and_report(prepared, progress)
    finally:
        prepared.lock.release()


def _train_and_report(prepared: PreparedRun, progress: bool) -> RunResult:
    from .preview import PREVIEW_AZIMUTHS, preview_grid, render_views, view_cameras, write_png  # noqa: PLC0415
    from .train import NonFiniteError, read_log  # noqa: PLC0415
    from .turntable import make_turntable  # noqa: PLC0415

    cfg, out, trainer, guidance, body = prepared.cfg, prepared.out, prepared.trainer, prepared.guidance, prepared.body
    device, amp, log = prepared.device, prepared.amp, prepared.log
    ckpt_dir = out / "checkpoints"
    # ---- from here on the output directory changes
    if cfg.tiny:
        atomic_write_bytes(out / "SMOKE_RUN.txt", SMOKE_NOTE.encode())
    log_path = out / "log.jsonl"
    body_fit = None
    if prepared.resume:
        start = trainer.step
        atomic_write_bytes(log_path, "".join(line + "\n" for line in prepared.log_lines).encode())
        log(f"resumed {out} at step {start} of {cfg.steps}")
    else:
        body_fit = trainer.init_from_body(progress)
        log(f"body init: bce {body_fit.loss:.4f}, occupancy accuracy {body_fit.accuracy:.3f}")
        log_path.unlink(missing_ok=True)
        start = 0
    config_mod.write_config(cfg, out)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    preview_cams = view_cameras(PREVIEW_AZIMUTHS)
    losses = []
    train_started = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=start, desc="SMOKE avatar" if cfg.tiny else "avatar", disable=not progress)
    try:
        with open(log_path, "a") as log_file:
            while trainer.step < cfg.steps:
                record = trainer.step_once()
                losses.append(record["loss"])
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                s = trainer.step
                if cfg.preview_every and s % cfg.preview_every == 0:
                    rgb, skel = render_views(trainer.field, guidance, body, preview_cams, cfg.latent_size,
                                             cfg.samples_per_ray, amp)
                    write_png(out / "previews" / f"step_{s:06d}.png", preview_grid(rgb, skel, cfg.tiny))
                if (cfg.checkpoint_every and s % cfg.checkpoint_every == 0) or s == cfg.steps:
                    trainer.save(ckpt_dir)
                bar.update(1)
                elapsed = time.perf_counter() - train_started
                bar.set_postfix(**_postfix(record), its=f"{len(losses) / max(elapsed, 1e-9):.2f}")
    except NonFiniteError as exc:
        bar.close()
        raise NonFiniteError(f"{exc}. The last good checkpoint is kept: {_describe_checkpoint(ckpt_dir)}") from None
    except KeyboardInterrupt:
        bar.close()
        log(f"interrupted at step {trainer.step}; {_describe_checkpoint(ckpt_dir)}; continue with --resume")
        raise
    bar.close()
    train_wall = time.perf_counter() - train_started
    tt = make_turntable(trainer.field, guidance, body, out, cfg.turntable_frames, cfg.turntable_fps,
                        cfg.latent_size, cfg.samples_per_ray, amp, cfg.turntable_overlay, cfg.tiny, progress)
    if tt.mp4_skipped:
        log(tt.mp4_skipped)
    steps_run = len(losses)
    logged = [json.loads(line)["loss"] for line in read_log(log_path, trainer.step)]  # this and earlier sessions
    metrics = {
        "smoke_run": bool(cfg.tiny),
        "steps": trainer.step,
        "steps_this_session": steps_run,
        "resumed_from_step": start if prepared.resume else None,
        "train_wall_s": train_wall,
        "total_wall_s": time.perf_counter() - prepared.started,
        "it_per_s": steps_run / train_wall if steps_run and train_wall > 0 else math.nan,
        "peak_memory": peak_memory(device),
        "final_loss": logged[-1] if logged else None,
        "first_loss": logged[0] if logged else None,
        "device": str(device),
        "precision": "fp16-autocast" if amp else "fp32",
        "batch": cfg.batch,
        "estimator": cfg.estimator,
        "torch_threads": torch.get_num_threads(),
        "body_init": dataclasses.asdict(body_fit) if body_fit else None,
        "turntable": {"frames": tt.frames, "gif": tt.gif.name, "mp4": tt.mp4.name if tt.mp4 else None},
    }
    atomic_write_bytes(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    log(f"done: {trainer.step} steps, {metrics['it_per_s']:.2f} it/s, outputs in {out}")
    return RunResult(metrics, out)


def _describe_checkpoint(ckpt_dir: Path) -> str:
    path = ckpt_dir / CHECKPOINT_NAME
    if not path.is_file():
        return "no checkpoint was written yet"
    try:
        step = torch.load(path, map_location="cpu", weights_only=True)["step"]
    except Exception:  # noqa: BLE001 - only a description
        return f"{path} (unreadable)"
    return f"{path} (step {step})"

