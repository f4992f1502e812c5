"""What a run's trajectory depends on beyond its settings: the model files and torch's thread
count, recorded in each checkpoint (``"environment"``) and compared on ``--resume``.

A model directory's fingerprint is the SHA-256 over every file's relative path, size and
three 1 MiB samples (start, middle, end), symbolic links followed (a linked ``unet/`` is
fingerprinted through the link, as a copy would be). Changed weights of the same size change their
bytes everywhere, so the samples catch a swap without reading gigabytes at each start; it
is a fingerprint, not a checksum against corruption (the checkpoint has that). Hub ids
are recorded as given (their files live in the Hugging Face cache, keyed by revision).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SAMPLE = 1 << 20  # bytes read at the start, the middle and the end of each file


def fingerprint(source) -> str | None:
    """The fingerprint of a local model directory or file; None for a hub id or nothing."""
    if not source:
        return None
    root = Path(source).expanduser()
    if not root.exists():
        return None
    files = [(root.name, root)] if root.is_file() else _files_through_links(root)
    digest = hashlib.sha256()
    for name, path in files:
        size = path.stat().st_size
        digest.update(f"{name}\0{size}\0".encode())
        with open(path, "rb") as handle:
            for offset in sorted({0, max(size // 2 - SAMPLE // 2, 0), max(size - SAMPLE, 0)}):
                handle.seek(offset)
                digest.update(handle.read(SAMPLE))
    return digest.hexdigest()


def _files_through_links(root: Path) -> list:
    """``(relative path, path)`` of every file under ``root``, sorted, symbolic links followed
    (a linked ``unet/`` is part of the model); a link back to a folder already walked is skipped."""
    found, seen = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        info = os.stat(folder)
        seen.add((info.st_dev, info.st_ino))
        subfolders[:] = [d for d in subfolders if _identity(os.path.join(folder, d)) not in seen]
        for name in names:
            path = Path(folder, name)
            if path.is_file():  # a dangling link or a special file holds no weights
                found.append((path.relative_to(root), path))
    found.sort(key=lambda item: item[0].parts)  # the order (and so the fingerprint) of earlier versions
    return [(str(relative), path) for relative, path in found]


def _identity(path):
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def run_environment(cfg, threads: int) -> dict:
    """The record a checkpoint keeps: the model fingerprints and torch's thread count."""
    return {"sd_model": fingerprint(cfg.sd_model), "controlnet": fingerprint(cfg.controlnet),
            "body": fingerprint(cfg.body), "torch_threads": int(threads)}


def environment_changes(saved, now: dict):
    """``(refusals, notes)`` from comparing a checkpoint's record with this run's.

    A different model file is a refusal (the resumed steps would follow other networks or
    another body); a different thread count is a note (float sums reorder: the result is
    equal in distribution, no longer bitwise). A checkpoint without a record (written
    before this was kept) gives neither.
    """
    if not isinstance(saved, dict):
        return [], []
    refusals = [f"{key}: the files changed since the checkpoint (fingerprint {str(saved[key])[:12]}..., "
                f"now {str(now[key])[:12]}...)" for key in ("sd_model", "controlnet", "body")
                if key in saved and saved[key] != now[key]]  # fmt: skip
    notes = []
    if "torch_threads" in saved and saved["torch_threads"] != now["torch_threads"]:
        notes.append(f"torch threads: the checkpoint was written with {saved['torch_threads']}, this run uses "
                     f"{now['torch_threads']}; the resumed run is equal in distribution, not bitwise")
    return refusals, notes
