"""Train several avatars together on one set of networks: ONE ControlNet + UNet call per step.

Each step, every active avatar's ``Trainer.begin_step`` renders its views and draws its
own cameras, t and noise from its own streams (seeded by its ``seed`` exactly as a single
``avatar`` run), the stacked inputs of all avatars (their prompts, skeleton conditions
and t differ) are concatenated along the batch into one ``predict_noise`` call, and the
output is split back for each ``Trainer.end_step``: its own estimator, gradient, Adam step,
log, previews and checkpoints (``run.RunSession``). So each avatar follows the trajectory
its own ``avatar`` run would take, up to the float rounding of a larger network batch.

At most ``max_concurrent`` avatars train at once; the others wait in a queue and start
when one finishes. A non-finite step stops that avatar alone (its last good checkpoint is
kept); the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import deque

import torch

from ..train import NonFiniteError, read_log

DONE, SKIPPED, STOPPED, FAILED = "done", "skipped", "stopped", "failed"


@dataclasses.dataclass
class JobResult:
    """One job's line of ``summary.json``.

    Attributes:
        name: the job's name (its directory under ``--out``).
        status: "done" (trained to the end now), "skipped" (finished by an earlier run),
            "stopped" (a non-finite step; resumable from its last checkpoint) or "failed"
            (could not start: the message says why).
        steps: steps trained so far (all sessions); target_steps: the job's ``steps``.
        wall_s: seconds from its preparation to its metrics (this session).
        it_per_s: its training steps per second this session (a batch step counts one
            step for each avatar in it).
        final_loss: the last logged guidance loss.
        outputs: its output directory.
        message: why it stopped or failed, else None.
        rank: the torch.distributed rank that ran it.
    """

    name: str
    status: str
    steps: int
    target_steps: int
    wall_s: float | None
    it_per_s: float | None
    final_loss: float | None
    outputs: str
    message: str | None = None
    rank: int = 0


def result_from_metrics(job, metrics: dict, status: str, rank: int) -> JobResult:
    it = metrics.get("it_per_s")
    return JobResult(job.name, status, int(metrics["steps"]), job.cfg.steps, metrics.get("total_wall_s"),
                     None if it is None or math.isnan(it) else it, metrics.get("final_loss"), str(job.cfg.out),
                     rank=rank)


def stacked_noise(guidance, pendings) -> list:
    """One ``predict_noise`` call on the concatenated inputs of ``pendings``; the output split
    back per pending step (same order)."""
    inputs = [p.inputs for p in pendings]
    conditions = [i.unet_conditions for i in inputs]
    if any(c is None for c in conditions):
        if not all(c is None for c in conditions):
            raise ValueError("conditions: expected every stacked avatar with skeleton conditions or none, got a mix")
        stacked_conditions = None
    else:
        stacked_conditions = torch.cat(conditions)
    eps = guidance.predict_noise(torch.cat([i.unet_latents for i in inputs]), torch.cat([i.unet_t for i in inputs]),
                                 torch.cat([i.unet_text for i in inputs]), stacked_conditions)
    return list(eps.split([int(i.unet_latents.shape[0]) for i in inputs]))


def stacked_step(trainers) -> list:
    """One training step of every trainer with one network call.

    Returns:
        Per trainer, its log record, or the ``NonFiniteError`` that stopped it (its field
        is unchanged; the other trainers stepped).
    """
    pendings = [t.begin_step() for t in trainers]
    outputs = []
    for trainer, pending, eps in zip(trainers, pendings, stacked_noise(trainers[0].guidance, pendings)):
        try:
            outputs.append(trainer.end_step(pending, eps))
        except NonFiniteError as exc:
            outputs.append(exc)
    return outputs


@dataclasses.dataclass
class _Active:
    job: object
    prepared: object
    session: object
    position: int
    fresh: bool = True


def _logger(log, name):
    return lambda message: log(f"[{name}] {message}")


def _start(job, models, progress, position, log, rank):
    """Prepare ``job`` on the shared ``models``; an ``_Active`` or the ``JobResult`` of a failed start."""
    from ..checkpoint import CheckpointError  # noqa: PLC0415
    from ..run import RunSession, prepare_run  # noqa: PLC0415

    try:
        prepared = prepare_run(job.cfg, resume=job.resume, progress=False, log=_logger(log, job.name), models=models)
    except (ValueError, OSError, CheckpointError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log(f"[{job.name}] failed to start: {message}")
        return JobResult(job.name, FAILED, 0, job.cfg.steps, None, None, None, str(job.cfg.out), message, rank)
    try:
        session = RunSession(prepared, progress, position=position, desc=job.name)
    except BaseException:
        prepared.lock.release()
        raise
    return _Active(job, prepared, session, position)


def _finish(active, rank) -> JobResult:
    try:
        result = active.session.finish()
    finally:
        active.prepared.lock.release()
    return result_from_metrics(active.job, result.metrics, DONE, rank)


def _stop(active, exc, rank, log) -> JobResult:
    session, prepared = active.session, active.prepared
    session.close()
    prepared.lock.release()
    message = str(session.non_finite(exc))
    log(f"[{active.job.name}] stopped: {message}")
    logged = read_log(session.log_path, prepared.trainer.step)
    it = len(session.losses) / session.train_wall if session.losses and session.train_wall else None
    return JobResult(active.job.name, STOPPED, prepared.trainer.step, prepared.cfg.steps, session.train_wall, it,
                     json.loads(logged[-1])["loss"] if logged else None, str(prepared.out), message, rank)


def train_jobs(jobs, models, max_concurrent: int, progress: bool = True, log=print, rank: int = 0) -> list:
    """Train ``jobs`` (``jobs.resolve_jobs``) on the shared ``models``, at most
    ``max_concurrent`` at once, one network call per step for all active avatars.

    Finished jobs are skipped (their ``metrics.json`` gives their result); a job with a
    checkpoint resumes. On KeyboardInterrupt every active avatar's log is closed and its
    lock released (its last checkpoint stays), then the interrupt is re-raised.

    Returns:
        ``JobResult`` per job, in the order of ``jobs``.
    """
    from .jobs import finished_metrics  # noqa: PLC0415

    results = {}
    for job in jobs:
        if job.finished:
            results[job.name] = result_from_metrics(job, finished_metrics(job.cfg.out), SKIPPED, rank)
            log(f"[{job.name}] finished earlier ({job.cfg.steps} steps): skipped")
    queue = deque(job for job in jobs if not job.finished)
    active, free = [], list(range(max_concurrent))
    try:
        while queue or active:
            while queue and free:
                started = _start(queue.popleft(), models, progress, free[0], log, rank)
                if isinstance(started, JobResult):
                    results[started.name] = started
                    continue
                free.pop(0)
                active.append(started)
            for a in active:
                if a.fresh:  # its clock starts with its first step, not while the others were prepared
                    a.session.restart_clock()
                    a.fresh = False
            ready = [a for a in active if a.session.done]  # resumed at its last step
            stepping = [a for a in active if not a.session.done]
            outputs = stacked_step([a.prepared.trainer for a in stepping]) if stepping else []
            for a, out in zip(stepping, outputs):
                if isinstance(out, NonFiniteError):
                    results[a.job.name] = _stop(a, out, rank, log)
                    continue
                try:
                    a.session.record(out)
                except NonFiniteError as exc:  # the checkpoint refused non-finite parameters
                    results[a.job.name] = _stop(a, exc, rank, log)
                    continue
                if a.session.done:
                    ready.append(a)
            for a in ready:  # stop their clocks before any turntable is rendered
                a.session.close()
            for a in ready:
                results[a.job.name] = _finish(a, rank)
            active = [a for a in active if a.job.name not in results]
            free = sorted(set(range(max_concurrent)) - {a.position for a in active})
    except KeyboardInterrupt:
        for a in active:
            a.session.close()
            a.prepared.lock.release()
            log(f"[{a.job.name}] interrupted at step {a.prepared.trainer.step}; {a.session.describe_checkpoint()}")
        raise
    return [results[job.name] for job in jobs]
