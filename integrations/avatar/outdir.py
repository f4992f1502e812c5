"""The output directory of an avatar run: checked before anything is written, locked for
the whole run, and cleared of the temporary files a killed run of this app leaves behind.

The lock is an exclusive ``flock`` on ``<out>/.lock``: the kernel drops it when the process
exits, however it exits (SIGKILL included), so a stale lock cannot block a later run. The
run writes its pid into the lock file only when the file is one this app wrote: created by
this run, or a single-named regular file holding nothing but a pid. A symbolic link, a hard
link (a second name of some other file), a special file or a file with other contents is
refused and left as it is. On systems without ``fcntl`` runs are not locked.

Only this app's own temporaries are removed, by exact name: ``atomic_write_bytes`` writes
``<dir>/.<output>.<random>.tmp`` next to each output (``OUTPUT_NAMES``), the mp4 writer
``.turntable.tmp.mp4``, ``run.prepare_tiny_assets`` half-built ``tiny_assets/.models.*`` and
``.body.*`` folders. Anything else under ``--out`` is the user's and stays.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from pathlib import Path

LOCK_NAME = ".lock"
PID_CONTENT = re.compile(rb"(?:\d{1,20}\n?)?")  # what a lock file of this app holds: its last pid, or nothing
TEMP_DIR_PREFIXES = (".models.", ".body.")  # run.prepare_tiny_assets builds in <out>/tiny_assets under these
# the files a run writes atomically, by folder under --out (patterns of the final names)
OUTPUT_NAMES = {
    ".": r"config\.json|metrics\.json|log\.jsonl|SMOKE_RUN\.txt|turntable\.gif",
    "checkpoints": r"last\.pt",
    "previews": r"step_\d{6}\.png",
    "turntable": r"\d{3}\.png",
}
MP4_TEMPORARY = ".turntable.tmp.mp4"  # turntable.write_turntable's, in --out
OUTPUT_FILES = ("config.json", "log.jsonl", "metrics.json", "SMOKE_RUN.txt", "turntable.gif", "turntable.mp4",
                "checkpoints/last.pt")
OUTPUT_DIRS = ("checkpoints", "previews", "turntable", "tiny_assets")


def check_output_location(out) -> Path:
    """``out`` is a writable directory, or could be created as one; creates nothing.

    Raises:
        ValueError: ``out`` is a file or a dangling symbolic link (or lies under one), or its
            nearest existing ancestor is not a writable directory (names the path and why).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: expected a writable output directory, got {str(out)!r} (a file)")
    base = out.absolute()
    while not base.exists() and base.parent != base:
        if base.is_symlink():  # mkdir cannot make it: the link exists, its target does not
            raise ValueError(f"out: expected a writable output directory, got {str(out)!r} ({str(base)!r} is a "
                             f"symbolic link to {os.readlink(base)!r}, which does not exist)")
        base = base.parent
    if not base.is_dir():
        raise ValueError(f"out: expected a writable output directory, got {str(out)!r} ({str(base)!r} is a file)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"out: expected a writable output directory, got {str(out)!r} ({str(base)!r} is not writable)")
    return out


class OutputLock:
    """An exclusive lock on ``<out>/.lock`` (use as a context manager or acquire/release).

    Raises:
        ValueError: from ``acquire``, when another process holds the lock (names its pid), or
            when ``.lock`` is not a regular file (a symbolic link, a directory, a FIFO ...).
    """

    def __init__(self, out):
        self.path = Path(out) / LOCK_NAME
        self._fd = None

    def acquire(self):
        try:
            import fcntl  # noqa: PLC0415 - POSIX only
        except ImportError:  # pragma: no cover - Windows: no lock
            return self
        fd, created = self._open()
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _foreign_lock(self.path)
            if info.st_nlink > 1:  # O_NOFOLLOW stops symbolic links, not a second name of a user's file
                raise _foreign_lock(self.path, f"a hard link (one of {info.st_nlink} names of the same file)")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise ValueError(
                    f"out: expected an output directory no other run is using, got {str(self.path.parent)!r} "
                    f"(locked by process {holder}); wait for it to finish or choose another --out"
                ) from None
            if not created:
                content = os.pread(fd, 64, 0)
                if not PID_CONTENT.fullmatch(content):
                    raise _foreign_lock(self.path, f"a file holding {content[:24]!r}... (not a pid)")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _open(self):
        """``(fd, created)``: the lock file, created here when absent; never through a link."""
        # O_NONBLOCK: opening a FIFO planted as .lock returns at once (fstat then refuses it)
        flags = os.O_RDWR | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
        for _ in range(3):  # another run may remove or create it between the two opens
            try:
                return os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o666), True
            except FileExistsError:
                pass
            try:
                return os.open(self.path, flags), False
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):  # a symbolic link, a directory, a socket
                    raise _foreign_lock(self.path) from exc
                raise
        raise FileNotFoundError(errno.ENOENT, "the lock file kept appearing and vanishing", str(self.path))

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def release(self):
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def check_output_files(out):
    """Each output path that already exists under ``out`` has the kind the run writes there (a
    ``log.jsonl`` directory would otherwise stop the run half-way with a traceback), and no
    other run's outputs lie there without a checkpoint (``check_no_unfinished_run``). An output
    folder (``checkpoints/``, ``previews/``, ...) that is a symbolic link is refused: the run
    writes only inside ``out``.

    Raises:
        ValueError: names the path and what it is.
    """
    out = Path(out)
    for rel, wanted, ok in [(d, "a directory", _real_dir) for d in OUTPUT_DIRS] + \
            [(f, "a file", Path.is_file) for f in OUTPUT_FILES]:  # fmt: skip
        path = out / rel
        if (path.exists() or path.is_symlink()) and not ok(path):
            got = "a file" if path.is_file() else _kind(path)
            raise ValueError(f"out: expected {rel} in {str(out)!r} to be {wanted} this app writes, got {got}; "
                             "remove it or choose another --out")
    check_no_unfinished_run(out)


# what a run writes before its first checkpoint; any of them without one is another run's
RUN_TRACES = ("config.json", "log.jsonl", "metrics.json", "previews", "turntable", "turntable.gif", "turntable.mp4")


def unfinished_run_outputs(out) -> list:
    """The names in ``RUN_TRACES`` that ``out`` holds when it holds no checkpoint (a run killed
    or stopped before its first one); ``[]`` when it holds a checkpoint or none of them."""
    out = Path(out)
    if (out / "checkpoints" / "last.pt").exists():
        return []  # a run to resume, or refused by run.check_previous_run
    return [name for name in RUN_TRACES if (out / name).is_file() or (
        (out / name).is_dir() and any(not is_own_temporary(name, p.name) for p in (out / name).iterdir()))]


def check_no_unfinished_run(out):
    """A directory holding a run's outputs but no checkpoint (killed before its first one, or
    another tool's) is refused: a fresh run would overwrite them and nothing can resume it.

    Raises:
        ValueError: names the directory and what it holds.
    """
    out = Path(out)
    found = unfinished_run_outputs(out)
    if found:
        raise ValueError(
            f"out: expected a directory without another run's outputs, got {str(out)!r} holding {', '.join(found)} "
            "and no checkpoints/last.pt (nothing to --resume); remove them or choose another --out"
        )


def _foreign_lock(path, got=None) -> ValueError:
    return ValueError(
        f"out: expected {LOCK_NAME!r} in {str(path.parent)!r} to be a regular file this app writes, "
        f"got {got or _kind(path)}; it was left as it is: remove it or choose another --out"
    )


def _real_dir(path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _kind(path) -> str:
    if path.is_symlink():
        return f"a symbolic link to {os.readlink(path)!r}"
    return "a directory" if path.is_dir() else "a special file"


def is_own_temporary(folder: str, name: str) -> bool:
    """Whether ``name`` in ``<out>/<folder>`` is the temporary of one of this app's outputs."""
    if folder == "." and name == MP4_TEMPORARY:
        return True
    targets = OUTPUT_NAMES.get(folder)
    return targets is not None and re.fullmatch(rf"\.(?:{targets})\.[A-Za-z0-9_]+\.tmp", name) is not None


def remove_stale_temporaries(out) -> list:
    """Delete what this app's interrupted writes leave in ``out`` (see the module docstring);
    call only while holding the lock.

    Returns:
        The removed paths.
    """
    out = Path(out)
    removed = []
    for folder in OUTPUT_NAMES:
        directory = out / folder
        if not directory.is_dir() or directory.is_symlink():
            continue
        for path in directory.iterdir():
            if is_own_temporary(folder, path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    assets = out / "tiny_assets"
    if assets.is_dir() and not assets.is_symlink():
        for path in assets.iterdir():
            if path.name.startswith(TEMP_DIR_PREFIXES) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed
