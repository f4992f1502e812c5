"""The output directory of an avatar run: checked before anything is written, locked for
the whole run, and cleared of the temporary files a killed run leaves behind.

The lock is an exclusive ``flock`` on ``<out>/.lock``: the kernel drops it when the process
exits, however it exits (SIGKILL included), so a stale lock cannot block a later run. On
systems without ``fcntl`` runs are not locked.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

LOCK_NAME = ".lock"
TEMP_DIR_PREFIXES = (".models.", ".body.")  # run.prepare_tiny_assets builds in <out>/tiny_assets under these


def check_output_location(out) -> Path:
    """``out`` is a writable directory, or could be created as one; creates nothing.

    Raises:
        ValueError: ``out`` is a file, or its nearest existing ancestor is not a writable
            directory (names the path and why).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: expected a writable output directory, got {str(out)!r} (a file)")
    base = out.absolute()
    while not base.exists() and base.parent != base:
        base = base.parent
    if not base.is_dir():
        raise ValueError(f"out: expected a writable output directory, got {str(out)!r} ({str(base)!r} is a file)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"out: expected a writable output directory, got {str(out)!r} ({str(base)!r} is not writable)")
    return out


class OutputLock:
    """An exclusive lock on ``<out>/.lock`` (use as a context manager or acquire/release).

    Raises:
        ValueError: from ``acquire``, when another process holds the lock (names its pid).
    """

    def __init__(self, out):
        self.path = Path(out) / LOCK_NAME
        self._fd = None

    def acquire(self):
        try:
            import fcntl  # noqa: PLC0415 - POSIX only
        except ImportError:  # pragma: no cover - Windows: no lock
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"out: expected an output directory no other run is using, got {str(self.path.parent)!r} "
                f"(locked by process {holder}); wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def remove_stale_temporaries(out) -> list:
    """Delete what interrupted atomic writes leave: hidden ``.*.tmp`` files anywhere under
    ``out`` and half-built hidden folders in ``out/tiny_assets``. Call only while holding the lock.

    Returns:
        The removed paths.
    """
    removed = []
    for root, dirs, files in os.walk(out):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp") or name.startswith(".write_probe."):
                (Path(root) / name).unlink(missing_ok=True)
                removed.append(Path(root) / name)
        for name in list(dirs):
            if Path(root).name == "tiny_assets" and name.startswith(TEMP_DIR_PREFIXES):
                shutil.rmtree(Path(root) / name, ignore_errors=True)
                removed.append(Path(root) / name)
                dirs.remove(name)
    return removed
