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
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from . import config as config_mod
from .atomic import atomic_write_bytes
from .checkpoint import CHECKPOINT_NAME
from .outdir import (
    OutputLock,
    check_output_files,
    check_output_location,
    remove_stale_temporaries,
    unfinished_run_outputs,
)
from .provenance import environment_changes, run_environment
from .quiet import progress_bar

SMOKE_NOTE = (
    "SMOKE RUN (--tiny): random tiny networks and a synthetic body. It exercises the whole "
    "pipeline; its images, turntable and losses carry no meaning.\n"
)


@dataclasses.dataclass
class RunResult:
    """What ``run_avatar`` returns: the metrics dict and the output directory."""

    metrics: dict
    out: Path


def pick_device(cfg):
    """``(torch.device, amp)`` for ``cfg.device`` / ``cfg.precision``; ValueError when unusable."""
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
    from .body.synthetic import write_synthetic_smpl  # noqa: PLC0415
    from ssd_toolkit.integrations.guidance.tiny import build_tiny_pipeline  # noqa: PLC0415

    assets = out / "tiny_assets"
    if cfg.sd_model and cfg.body:
        return cfg  # given (e.g. shared by avatar-batch): nothing to build
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
    """The A-posed body of ``cfg.body`` (``check_inputs`` has checked that the path exists)."""
    from .body.smpl import load_body_model, posed_body  # noqa: PLC0415

    return posed_body(load_body_model(cfg.body, model_type=cfg.model_type, gender=cfg.gender), preset="A")


def load_guidance_for(cfg, device, amp, models=None):
    """The run's guidance; on ``models`` (already loaded, shared by a batch) when given.

    ``--M`` goes to SSD and its ablations; ``--guidance-scale`` to SDS, ISM and SDS-Bridge
    (NFSD keeps its paper's 7.5, CSD has none).
    """
    from ssd_toolkit.integrations.guidance.controlnet import ControlNetGuidance  # noqa: PLC0415
    from ssd_toolkit.integrations.guidance.estimator_choice import canonical_name, estimator_params  # noqa: PLC0415
    from ssd_toolkit.integrations.guidance.models import load_models  # noqa: PLC0415
    from ssd_toolkit.integrations.guidance.prompts import sds_bridge_source_prompt  # noqa: PLC0415

    if models is None:
        models = load_models(cfg.sd_model, cfg.controlnet or None, device=device, dtype="float16" if amp else "float32")
    params = estimator_params(cfg.estimator, M=cfg.M, guidance_scale=cfg.guidance_scale,
                              scale_takers=config_mod.SCALE_TAKERS)
    bridge = canonical_name(cfg.estimator) == "sds-bridge"
    options = {k: getattr(cfg, k) for k in ("grad_latent_clip", "grad_latent_clip_scale", "grad_latent_norm",
                                            "grad_latent_nan_to_num")}
    return ControlNetGuidance(
        models, estimator=cfg.estimator, estimator_params=params, weighting=cfg.weighting, t_sampler=cfg.t_sampler,
        guidance_scale=cfg.guidance_scale, negative_prompt=cfg.negative_prompt, seed=cfg.seed,
        source_prompt=sds_bridge_source_prompt(cfg.prompt, cfg.source_prompt) if bridge else None,
        gradient_options=options, guidance_adjust=cfg.guidance_adjust,
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


def check_previous_run(out: Path, resume: bool):
    """A fresh run needs ``out`` without a checkpoint, a resume needs one.

    Raises:
        ValueError: a fresh run into a directory that holds a run.
        FileNotFoundError: ``--resume`` without a checkpoint.
    """
    checkpoint = out / "checkpoints" / CHECKPOINT_NAME
    if not resume and checkpoint.exists():
        raise ValueError(
            f"out: {str(out)!r} already holds a run ({checkpoint}); pass --resume to continue it or choose another --out"
        )
    if resume and not checkpoint.is_file():
        raise FileNotFoundError(f"--resume: expected a checkpoint at {str(checkpoint)!r}, got none")


def check_steps_left(steps: int, checkpoint_step: int):
    """``--steps`` below the checkpoint's step is refused (ValueError naming --steps); equal to
    it is a no-op resume: no step runs, the turntable and metrics.json are written again."""
    if steps < checkpoint_step:
        raise ValueError(
            f"--steps: expected at least the checkpoint's step {checkpoint_step} to continue the run, got {steps}; "
            f"pass --resume --steps N with N > {checkpoint_step} to train further, or choose another --out for a new run"
        )


def _create_directory(out: Path) -> bool:
    """Make ``out``; True only when this call created it (``mkdir`` is atomic, so of two runs
    starting together exactly one gets True)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        out.mkdir()
    except FileExistsError:
        return False
    return True


def check_inputs(cfg, resume: bool):
    """The checks that need no output directory: location, previous run, device, files, drawing.

    Returns:
        ``(out, device, amp)``: the output directory (``Path``) and ``pick_device(cfg)``.
    """
    from .body.openpose import load_openpose_drawing  # noqa: PLC0415

    out = check_output_location(cfg.out)
    check_previous_run(out, resume)  # early, for a clear error before anything loads; again under the lock
    device, amp = pick_device(cfg)
    check_body_path(cfg)
    for name in ("sd_model", "controlnet"):  # a local path must exist; anything else is a hub id
        value = getattr(cfg, name)
        if value and (value.startswith((".", "/", "~")) or Path(value).exists()) and not Path(value).expanduser().is_dir():
            raise FileNotFoundError(f"{name}: expected a diffusers model directory or hub id, got {value!r} (no such directory)")
    load_openpose_drawing()  # ImportError with the install command when controlnet_aux is missing
    return out, device, amp


def prepare_run(cfg, resume: bool = False, progress: bool = True, log=print, models=None) -> PreparedRun:
    """Check every input, lock ``cfg.out``, load the networks and body, and (on resume) the
    checkpoint; nothing in ``cfg.out`` is written except the lock and, for --tiny, its assets.
    ``models`` (``models.GuidanceModels``) skips loading the networks: a batch shares them.

    The directory is locked before its contents are judged. A fresh run whose preparation
    fails removes the output directory only if this call created it and held its lock.

    Raises:
        ValueError: unwritable or locked output, bad body model type, device/precision
            mismatch, a fresh run into a directory that holds one, a corrupt checkpoint or
            one from other settings (``checkpoint.CheckpointError``).
        FileNotFoundError: missing body file, model directory or (resume) checkpoint.
        ImportError: controlnet_aux's drawing module is missing (with the install command).
        OSError: networks that cannot be loaded; a full disk while building --tiny assets.
    """
    from .train import Trainer, load_resume_state, read_resume_log  # noqa: PLC0415

    started = time.perf_counter()
    out, device, amp = check_inputs(cfg, resume)
    if cfg.tiny and device.type == "cpu":
        torch.set_num_threads(1)  # tiny tensors: a second thread only contends (2 loaded cores: ~4x slower)
    created = _create_directory(out)
    lock = OutputLock(out)
    try:
        lock.acquire()  # before deciding anything about the directory's contents
        check_output_files(out)
        check_previous_run(out, resume)  # another run may have finished in it since check_inputs
        remove_stale_temporaries(out)
        if resume:  # cheap checks first: checksum, keys, settings, model fingerprints, log
            state, state_path = load_resume_state(out / "checkpoints", cfg)
            check_steps_left(cfg.steps, int(state["step"]))
            log_lines = read_resume_log(out / "log.jsonl", int(state["step"]))
            for note in environment_changes(state.get("environment"), run_environment(cfg, torch.get_num_threads()))[1]:
                log(f"note: {note}")
        if cfg.tiny:
            cfg = prepare_tiny_assets(cfg, out)
            log(SMOKE_NOTE.strip())
        body = load_body(cfg)
        guidance = load_guidance_for(cfg, device, amp, models)
        down = 2 ** (len(guidance.models.unet.config.block_out_channels) - 1)
        if cfg.latent_size % down:
            raise ValueError(f"latent_size: expected a multiple of {down} (the UNet downsamples {down}x), got {cfg.latent_size}")
        trainer = Trainer(cfg, guidance, body, device, amp)
        if resume:
            trainer.apply_resume_state(state, state_path)
        else:
            log_lines = []
    except BaseException:
        if created and lock.held:
            # ours alone: this call made it and has held the lock since, so no other run is in it;
            # removed before the lock is released, so none can enter before it is gone
            shutil.rmtree(out, ignore_errors=True)
        lock.release()
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
    from .train import NonFiniteError  # noqa: PLC0415

    session = RunSession(prepared, progress)
    try:
        while not session.done:
            session.record(prepared.trainer.step_once())
    except NonFiniteError as exc:
        session.close()
        raise session.non_finite(exc) from None
    except KeyboardInterrupt:
        session.close()
        prepared.log(f"interrupted at step {prepared.trainer.step}; {session.describe_checkpoint()}; continue with --resume")
        raise
    session.close()
    return session.finish()


class RunSession:
    """The outputs of one run while it trains (``avatar`` drives one, ``avatar-batch`` several).

    Construction writes the start of the session (SMOKE_RUN.txt, the log kept on resume or
    the body initialisation on a fresh run, config.json); ``record`` takes each step's log
    record (log line, preview, checkpoint, progress bar); ``finish`` renders the turntable
    and writes metrics.json. The caller owns the lock (``PreparedRun.lock``).

    Args:
        prepared: ``PreparedRun``.
        progress: show a tqdm bar.
        position: the bar's line (one per avatar in a batch).
        desc: the bar's label.
    """

    def __init__(self, prepared: PreparedRun, progress: bool = True, position: int = 0, desc: str | None = None):
        cfg, out, trainer = prepared.cfg, prepared.out, prepared.trainer
        self.prepared = prepared
        self.ckpt_dir = out / "checkpoints"
        self.log_path = out / "log.jsonl"
        self.body_fit = None
        # ---- from here on the output directory changes
        if cfg.tiny:
            atomic_write_bytes(out / "SMOKE_RUN.txt", SMOKE_NOTE.encode())
        if prepared.resume:
            self.start = trainer.step
            atomic_write_bytes(self.log_path, "".join(line + "\n" for line in prepared.log_lines).encode())
            prepared.log(f"resumed {out} at step {self.start} of {cfg.steps}")
        else:
            self.body_fit = trainer.init_from_body(progress)
            prepared.log(f"body init: bce {self.body_fit.loss:.4f}, occupancy accuracy {self.body_fit.accuracy:.3f}")
            self.log_path.unlink(missing_ok=True)
            self.start = 0
        config_mod.write_config(cfg, out)
        if prepared.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(prepared.device)
        from .preview import PREVIEW_AZIMUTHS, view_cameras  # noqa: PLC0415

        self.preview_cams = view_cameras(PREVIEW_AZIMUTHS)
        self.losses = []
        self.log_file = open(self.log_path, "a")  # noqa: SIM115 - closed by close()
        self.bar = progress_bar(total=cfg.steps, initial=self.start, position=position, leave=True,
                        desc=desc or ("SMOKE avatar" if cfg.tiny else "avatar"), disable=not progress)
        self.train_started = time.perf_counter()
        self.train_wall = None

    def restart_clock(self):
        """Start the training clock now (a batch calls it when the avatar's first step starts)."""
        self.train_started = time.perf_counter()

    @property
    def done(self) -> bool:
        return self.prepared.trainer.step >= self.prepared.cfg.steps

    def record(self, record: dict):
        """Log the step ``record`` the trainer just returned; write its preview and checkpoint."""
        from .preview import preview_grid, render_views, write_png  # noqa: PLC0415

        p = self.prepared
        cfg, trainer = p.cfg, p.trainer
        self.losses.append(record["loss"])
        self.log_file.write(json.dumps(record) + "\n")
        self.log_file.flush()
        s = trainer.step
        if cfg.preview_every and s % cfg.preview_every == 0:
            rgb, skel = render_views(trainer.field, p.guidance, p.body, self.preview_cams, cfg.latent_size,
                                     cfg.samples_per_ray, p.amp)
            write_png(p.out / "previews" / f"step_{s:06d}.png", preview_grid(rgb, skel, cfg.tiny))
        if (cfg.checkpoint_every and s % cfg.checkpoint_every == 0) or s == cfg.steps:
            os.fsync(self.log_file.fileno())  # the log on disk covers every checkpoint (a resume needs it)
            trainer.save(self.ckpt_dir)
        self.bar.update(1)
        self.bar.set_postfix(**_postfix(record))  # the rate is tqdm's own

    def close(self):
        """Close the log and the bar; stops the training clock. Idempotent."""
        if self.train_wall is None:
            self.train_wall = time.perf_counter() - self.train_started
        self.log_file.close()
        self.bar.close()

    def describe_checkpoint(self) -> str:
        return _describe_checkpoint(self.ckpt_dir)

    def non_finite(self, exc):
        """``exc`` (a ``NonFiniteError``) with where the last good checkpoint is or, before the
        first one, what to remove before running into the same directory again."""
        out = self.prepared.out
        left = unfinished_run_outputs(out)
        if left:  # nothing to resume, and a fresh run would refuse these (outdir.check_no_unfinished_run)
            return type(exc)(f"{exc}. No checkpoint was written yet, so nothing can resume this run; remove "
                             f"{', '.join(str(out / name) for name in left)} (or the folder) or choose another --out "
                             "before running again")
        return type(exc)(f"{exc}. The last good checkpoint is kept: {self.describe_checkpoint()}")

    def finish(self) -> RunResult:
        """Render the turntable and write metrics.json (after ``close``)."""
        from .train import read_log  # noqa: PLC0415
        from .turntable import make_turntable  # noqa: PLC0415

        self.close()
        p = self.prepared
        cfg, out, trainer, device = p.cfg, p.out, p.trainer, p.device
        tt = make_turntable(trainer.field, p.guidance, p.body, out, cfg.turntable_frames, cfg.turntable_fps,
                            cfg.latent_size, cfg.samples_per_ray, p.amp, cfg.turntable_overlay, cfg.tiny,
                            not self.bar.disable)
        if tt.mp4_skipped:
            p.log(tt.mp4_skipped)
        steps_run = len(self.losses)
        logged = [json.loads(line)["loss"] for line in read_log(self.log_path, trainer.step)]  # all sessions
        metrics = {
            "smoke_run": bool(cfg.tiny),
            "steps": trainer.step,
            "steps_this_session": steps_run,
            "resumed_from_step": self.start if p.resume else None,
            "train_wall_s": self.train_wall,
            "total_wall_s": time.perf_counter() - p.started,
            "it_per_s": steps_run / self.train_wall if steps_run and self.train_wall > 0 else None,  # JSON: no NaN
            "peak_memory": peak_memory(device),
            "final_loss": logged[-1] if logged else None,
            "first_loss": logged[0] if logged else None,
            "device": str(device),
            "precision": "fp16-autocast" if p.amp else "fp32",
            "batch": cfg.batch,
            "estimator": cfg.estimator,
            "torch_threads": torch.get_num_threads(),
            "body_init": dataclasses.asdict(self.body_fit) if self.body_fit else None,
            "turntable": {"frames": tt.frames, "gif": tt.gif.name, "mp4": tt.mp4.name if tt.mp4 else None},
        }
        atomic_write_bytes(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
        rate = f"{metrics['it_per_s']:.2f} it/s" if metrics["it_per_s"] is not None else "no steps this session"
        p.log(f"done: {trainer.step} steps, {rate}, outputs in {out}")
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

