"""The canonical-avatar training loop: state, one step, checkpoints that resume exactly.

One step (``Trainer.step_once``): sample B orbit cameras (DreamWaltz's ranges), render
``[B, 4, h, w]`` latents from the field, draw the skeleton conditions from the same
cameras, encode the view-dependent prompts, run the guidance (SSD by default), and take
an Adam step on ``guidance loss + regularisers``. The guidance loss's gradient on the
latents is exactly the guidance's ``gradients / B``; the regularisers (mean opacity and
the binary entropy of the opacity, summed over pixels and averaged over the batch like
the guidance term) keep the field sparse and crisp.

Mixed precision (CUDA): the field and renderer run under ``torch.autocast(float16)``
(compositing stays float32), the networks are float16, and a ``GradScaler`` scales the
whole loss, so the injected guidance gradient is scaled and unscaled with the rest.

Exact resume: a checkpoint holds the step, the field, Adam and GradScaler state and every
random stream (cameras: NumPy Generator; ray jitter: torch Generator; guidance noise:
the guidance's torch Generator; timesteps: the sampler's NumPy Generator; plus the global
torch/CUDA and Python ``random`` states). Nothing else draws random numbers, so on CPU a
resumed run repeats the uninterrupted one bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from .body_init import body_box, fit_body_density
from .cameras import sample_cameras
from .checkpoint import (
    CHECKPOINT_NAME,
    TRAINER_KEYS,
    CheckpointError,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from .config import RESUME_FIXED
from .field import FieldConfig, LatentField
from .provenance import environment_changes, run_environment
from ssd_toolkit.integrations.guidance.prompts import view_prompts
from .render import render_latents
from .body.skeleton import draw_conditions


class NonFiniteError(RuntimeError):
    """A step produced NaN/Inf; the run stopped before updating (see the message)."""


def _sampler_rng(guidance):
    """The timestep sampler's NumPy Generator, saved with every checkpoint."""
    return {"t_sampler": guidance.t_sampler.rng}


def binary_entropy(p, eps: float = 1e-6):
    """Elementwise ``-p log p - (1 - p) log(1 - p)`` with ``p`` clamped to ``[eps, 1 - eps]``."""
    p = p.clamp(eps, 1 - eps)
    return -(p * p.log() + (1 - p) * (1 - p).log())


@dataclasses.dataclass
class PendingStep:
    """A step between ``Trainer.begin_step`` and ``Trainer.end_step``: the render (in the
    field's graph) and the guidance's ``StepInputs``."""

    render: object
    inputs: object


class Trainer:
    """Field, optimizer and random streams of one run.

    Args:
        cfg: ``config.AvatarConfig``.
        guidance: ``ssd_toolkit.integrations.guidance.ControlNetGuidance`` (seeded with ``cfg.seed``).
        body: the posed body (``vertices``, ``faces``, ``keypoints``) used for the box,
            the density initialisation and the skeleton conditions.
        device: ``torch.device`` of the field (the guidance's device).
        amp: float16 autocast + GradScaler (CUDA only).
    """

    def __init__(self, cfg, guidance, body, device, amp: bool):
        if amp and torch.device(device).type != "cuda":
            raise ValueError(f"amp: float16 mixed precision needs a CUDA device, got {device}")
        self.cfg = cfg
        self.environment = run_environment(cfg, torch.get_num_threads())  # checkpointed; compared on resume
        self.guidance = guidance
        self.body = body
        self.device = torch.device(device)
        self.amp = amp
        self.step = 0
        center, half_extent = body_box(body.vertices, cfg.box_margin)
        init_gen = torch.Generator().manual_seed(cfg.seed)
        field_cfg = FieldConfig(tuple(cfg.field_resolutions), cfg.field_features, cfg.field_hidden)
        self.field = LatentField(center, half_extent, field_cfg, generator=init_gen).to(self.device)
        self.optimizer = torch.optim.Adam(self.field.parameters(), lr=cfg.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp)
        self.camera_rng = np.random.default_rng(cfg.seed)
        self.ray_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.text_uncond = guidance.encode_prompts([cfg.negative_prompt])
        self.condition_size = cfg.latent_size * guidance.vae_scale_factor

    # ------------------------------------------------------------------ streams

    def _numpy_streams(self):
        return {"cameras": self.camera_rng, **_sampler_rng(self.guidance)}

    def _torch_streams(self):
        return {"rays": self.ray_gen, "guidance_noise": self.guidance.generator}

    # ------------------------------------------------------------------ set-up

    def init_from_body(self, progress: bool = True):
        """Fit the density to the body's occupancy (fresh runs only); returns ``BodyFit``."""
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 2)
        return fit_body_density(self.field, self.body, self.cfg.body_init_steps, gen, batch=self.cfg.body_init_batch,
                                progress=progress)

    # ------------------------------------------------------------------ one step

    def step_once(self) -> dict:
        """Run training step ``self.step + 1``; returns its log record (plain floats).

        Raises:
            NonFiniteError: the guidance gradient, the loss or the regularisers are not
                finite; nothing was updated.
        """
        pending = self.begin_step()
        prep = pending.inputs
        eps = self.guidance.predict_noise(prep.unet_latents, prep.unet_t, prep.unet_text, prep.unet_conditions)
        return self.end_step(pending, eps)

    def begin_step(self) -> "PendingStep":
        """The part of ``step_once`` before the ControlNet + UNet call: cameras, render,
        skeleton conditions, view prompts, and the guidance's t, noise and stacked inputs
        (``pending.inputs``, a ``controlnet.StepInputs``). Draws from this run's streams only,
        so a batch trainer may interleave several runs' steps without changing any of them."""
        cfg = self.cfg
        cams = sample_cameras(cfg.batch, self.camera_rng)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            render = render_latents(self.field, cams.cam2world, cams.fovy_deg, cfg.latent_size, cfg.samples_per_ray,
                                    generator=self.ray_gen)
        skeleton = draw_conditions(self.body, cams, size=self.condition_size)
        conditions = torch.from_numpy(np.ascontiguousarray(skeleton)).to(self.device).permute(0, 3, 1, 2).float() / 255
        text_cond = self.guidance.encode_prompts(view_prompts(cfg.prompt, cams.polar_deg, cams.azimuth_deg))
        inputs = self.guidance.prepare_step(render.latents, text_cond, self.text_uncond, conditions,
                                            train_step=self.step, max_iteration=cfg.steps)
        return PendingStep(render, inputs)

    def end_step(self, pending: "PendingStep", eps) -> dict:
        """The part of ``step_once`` after the networks: estimator, regularisers, NaN guard,
        Adam step. ``eps`` is ``predict_noise``'s output for ``pending.inputs``.

        Raises:
            NonFiniteError: as ``step_once``; nothing was updated.
        """
        cfg = self.cfg
        step = self.step + 1
        render = pending.render
        out = self.guidance.finish_step(pending.inputs, eps)
        pixels = cfg.latent_size**2
        opacity = render.opacity.flatten(1)
        sparsity = opacity.mean() * pixels
        entropy = binary_entropy(opacity).mean() * pixels
        reg = cfg.lambda_sparsity * sparsity + cfg.lambda_entropy * entropy
        loss = out.loss + reg
        bad = int((~torch.isfinite(out.gradients)).sum())
        if bad or not math.isfinite(loss.item()):
            raise NonFiniteError(
                f"step {step}: non-finite values (guidance gradient: {bad} non-finite entries, guidance loss "
                f"{out.loss.item()}, regularisers {reg.item()}); stopped before updating the field"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step = step
        d = out.diagnostics
        record = {
            "step": step,
            "loss": out.loss.item(),
            "reg": reg.item(),
            # batch mean of the per-sample norm of the gradient applied to the latents
            "grad_norm": float(out.gradients.detach().float().flatten(1).norm(dim=1).mean()),
            "t_mean": float(out.t.float().mean()),
            "opacity": opacity.mean().item(),
        }
        if "frac_mode_seeking" in d:  # SSD: share of samples in each branch (t <= M / t > M)
            record["mode_seeking"] = d["frac_mode_seeking"]
            record["mode_disengaging"] = d["frac_mode_disengaging"]
        return record

    # ------------------------------------------------------------------ checkpoints

    def parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.field.parameters())

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "field": self.field.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng(self._numpy_streams(), self._torch_streams()),
            "config": dataclasses.asdict(self.cfg),
            "environment": self.environment,
        }

    def load_state_dict(self, state: dict):
        self.field.load_state_dict(state["field"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], self._numpy_streams(), self._torch_streams())
        self.step = int(state["step"])

    def save(self, directory) -> Path:
        """Atomically write ``<directory>/last.pt``; refuses non-finite parameters.

        Raises:
            NonFiniteError: a parameter is NaN/Inf (the previous checkpoint is kept).
        """
        if not self.parameters_finite():
            raise NonFiniteError(f"step {self.step}: the field's parameters are not finite; checkpoint not written")
        path = Path(directory) / CHECKPOINT_NAME
        save_checkpoint(path, self.state_dict())
        return path

    def apply_resume_state(self, state: dict, path) -> int:
        """Load a state from ``load_resume_state``; returns the step it continues after.

        Raises:
            CheckpointError: the state does not fit this run's field or optimizer.
        """
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise CheckpointError(
                f"--resume: expected a checkpoint of this run's field and optimizer at {str(path)!r}, got one that does "
                f"not fit ({type(exc).__name__}: {str(exc).splitlines()[0]}); nothing was changed"
            ) from exc
        return self.step


def load_resume_state(directory, cfg):
    """``(state, path)`` of ``<directory>/last.pt``, verified (checksum, keys) and checked
    against ``cfg``'s settings; cheap, so a resume can check it before loading any network.

    Raises:
        FileNotFoundError: no checkpoint.
        CheckpointError: corrupt or from another run's settings.
    """
    path = Path(directory) / CHECKPOINT_NAME
    state = load_checkpoint(path, device="cpu", required=TRAINER_KEYS)
    check_settings(state, cfg, path)
    return state, path


def check_settings(state: dict, cfg, path):
    """Refuse a checkpoint whose saved settings (or Adam learning rate) differ from ``cfg``'s.

    Raises:
        CheckpointError: names every differing setting.
    """
    saved = state["config"] if isinstance(state["config"], dict) else {}
    differ = [f"{k}: checkpoint {saved.get(k)!r}, config {getattr(cfg, k)!r}" for k in RESUME_FIXED
              if k in saved and saved[k] != getattr(cfg, k)]  # fmt: skip
    missing = [k for k in RESUME_FIXED if k not in saved]
    if missing:
        differ.append(f"settings {missing} not recorded")
    groups = state["optimizer"].get("param_groups", []) if isinstance(state["optimizer"], dict) else []
    lrs = sorted({g.get("lr") for g in groups})
    if lrs != [cfg.lr]:
        differ.append(f"Adam lr: checkpoint {lrs}, config {cfg.lr!r}")
    refusals, _ = environment_changes(state.get("environment"), run_environment(cfg, torch.get_num_threads()))
    differ += refusals
    if differ:
        raise CheckpointError(
            f"--resume: expected a checkpoint of the run in config.json, got one from other settings at {str(path)!r} "
            f"({'; '.join(differ)}); nothing was changed"
        )


def read_log(path, last_step: int) -> list:
    """The records of ``path`` (JSON lines) with ``step <= last_step``, as text lines.

    A torn last line (an interrupted write, a full disk) is dropped.

    Raises:
        ValueError: an unparsable line before the last, naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            step = json.loads(line)["step"]
            if isinstance(step, bool) or not isinstance(step, int):
                raise TypeError(f"step {step!r} is not an integer")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            if number == len(lines):
                break  # torn last line
            raise ValueError(f"log: expected one JSON record per line in {str(path)!r}, got line {number}: {exc}") from exc
        if step <= last_step:
            kept.append(line)
    return kept


def read_resume_log(path, checkpoint_step: int) -> list:
    """``read_log(path, checkpoint_step)``, which must hold exactly the records of steps 1 to
    ``checkpoint_step``: a resume writes the log on from there, and metrics.json's
    ``first_loss`` and ``final_loss`` come from it, so a missing or short log would leave
    steps out without a word. The checkpoint cannot rebuild it (it keeps no losses).

    Raises:
        ValueError: one line naming the file, the steps expected and what it holds.
    """
    path = Path(path)
    if checkpoint_step == 0:
        return []
    expected = f"to hold the records of steps 1 to {checkpoint_step} (the checkpoint's step)"
    remedy = "restore it, or start a new run with another --out (the checkpoint cannot rebuild the log)"
    if not path.is_file():
        raise ValueError(f"log: expected {str(path)!r} {expected}, got no file; {remedy}")
    lines = read_log(path, checkpoint_step)
    steps = [json.loads(line)["step"] for line in lines]
    if steps != list(range(1, checkpoint_step + 1)):
        missing = sorted(set(range(1, checkpoint_step + 1)) - set(steps))
        if not steps:
            got = "no records"
        elif missing:
            got = f"{len(steps)} records, without step{'s' if len(missing) > 1 else ''} {_ranges(missing)}"
        else:
            got = f"{len(steps)} records, steps repeated or out of order"
        raise ValueError(f"log: expected {str(path)!r} {expected}, got {got}; {remedy}")
    return lines


def _ranges(numbers) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"`` (sorted integers)."""
    parts, start = [], numbers[0]
    for previous, current in zip(numbers, [*numbers[1:], None]):
        if current != previous + 1:
            parts.append(f"{start}-{previous}" if previous != start else f"{start}")
            start = current
    return ", ".join(parts)
