"""Crash-safe checkpoint files and the random-number state of a run.

Every file is written with ``atomic.atomic_write_bytes``, so an interrupt leaves either
the previous file or the new one, never a torn one.

A checkpoint is ``torch.save``'s bytes followed by a 40-byte trailer, ``CHECKSUM_MAGIC``
and the SHA-256 of those bytes: a flipped byte, a truncated or foreign file is refused
(``CheckpointError``) instead of loading silently. ``torch.load`` still reads the file (it
ignores bytes after its archive).
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import torch

from .atomic import atomic_write_bytes

CHECKPOINT_NAME = "last.pt"
CHECKSUM_MAGIC = b"SSDCKPT1"
_TRAILER = len(CHECKSUM_MAGIC) + 32
TRAINER_KEYS = ("step", "field", "optimizer", "scaler", "rng", "config")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupt, foreign, or from another run's settings)."""


def save_checkpoint(path, state: dict):
    """``torch.save(state)`` plus the checksum trailer, written to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    atomic_write_bytes(path, payload + CHECKSUM_MAGIC + hashlib.sha256(payload).digest())


def load_checkpoint(path, device="cpu", required=()) -> dict:
    """A checkpoint written by ``save_checkpoint``, verified (tensors only, ``weights_only=True``).

    Args:
        path: the file.
        device: ``map_location``.
        required: keys the state must have (a trainer's: ``TRAINER_KEYS``); an integer
            ``step >= 0`` is checked when "step" is among them.

    Raises:
        FileNotFoundError: no checkpoint at ``path`` (the message says how to start fresh).
        CheckpointError: no or wrong checksum (truncated, empty, random, flipped bytes),
            unreadable archive, or missing keys; the file is left as it is.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--resume: expected a checkpoint at {str(path)!r}, got none; start without --resume")

    def refuse(what):
        return CheckpointError(f"--resume: expected a valid checkpoint at {str(path)!r}, got {what}; nothing was changed")

    data = path.read_bytes()
    if len(data) < _TRAILER or data[-_TRAILER:-32] != CHECKSUM_MAGIC:
        raise refuse(f"{len(data)} bytes without a checksum trailer (truncated, empty, or not written by this ssd-toolkit version)")
    payload = data[:-_TRAILER]
    if hashlib.sha256(payload).digest() != data[-32:]:
        raise refuse("a file whose SHA-256 does not match its trailer (corrupt)")
    try:
        state = torch.load(io.BytesIO(payload), map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever an unreadable archive raises
        raise refuse(f"an unreadable archive ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise refuse(f"a file missing {missing}")
    if "step" in required and (isinstance(state["step"], bool) or not isinstance(state["step"], int) or state["step"] < 0):
        raise refuse(f"step {state['step']!r} (expected an integer >= 0)")
    return state


def capture_rng(numpy_generators: dict, torch_generators: dict) -> dict:
    """Every random stream of a run, as plain data ``save_checkpoint`` can store.

    Args:
        numpy_generators: name -> ``numpy.random.Generator``.
        torch_generators: name -> ``torch.Generator``.

    Returns:
        A dict with the global torch (and CUDA, when initialised) RNG, Python's ``random``
        state, and each named generator's state.
    """
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {k: g.bit_generator.state for k, g in numpy_generators.items()},
        "torch_generators": {k: g.get_state() for k, g in torch_generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, numpy_generators: dict, torch_generators: dict):
    """Put back what ``capture_rng`` captured, into the same named generators.

    Raises:
        KeyError: a generator of this run has no saved state (a different kind of run).
    """
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_as_python_state(state["python"]))
    for name, gen in numpy_generators.items():
        gen.bit_generator.state = state["numpy"][name]
    for name, gen in torch_generators.items():
        gen.set_state(state["torch_generators"][name].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _as_python_state(value):
    """``random.setstate`` needs tuples; a round trip may give lists."""
    version, internal, gauss = value
    return (version, tuple(int(v) for v in internal), gauss)

