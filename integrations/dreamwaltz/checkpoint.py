"""Crash-safe checkpoint files and the random-number state of a run.

Every file is written to a temporary name in the same directory, flushed to disk, then
renamed over the old one (``os.replace`` is atomic on POSIX and Windows), so an
interrupt leaves either the previous file or the new one, never a torn one.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from pathlib import Path

import torch

CHECKPOINT_NAME = "last.pt"


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path, state: dict):
    """``torch.save(state)`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path, device="cpu") -> dict:
    """A checkpoint written by ``save_checkpoint`` (tensors only, ``weights_only=True``).

    Raises:
        FileNotFoundError: no checkpoint at ``path`` (the message says how to start fresh).
        RuntimeError: the file cannot be read as a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--resume: expected a checkpoint at {str(path)!r}, found none; start without --resume")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"--resume: could not read the checkpoint {str(path)!r}: {exc}") from exc


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

