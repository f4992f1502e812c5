"""The JOBS file of ``ssd-toolkit avatar-batch``: read, named, resolved into avatar settings.

JOBS is either a text file (one prompt per line; blank lines and ``#`` comments skipped)
or a JSON/YAML list whose items are a prompt string or a mapping of ``avatar`` settings
(any ``config.AvatarConfig`` field) plus an optional ``name``. Each job trains into
``<out>/<name>``; the default name is ``NNN-<prompt slug>`` (NNN = its line/item number).

Settings, lowest precedence first: the ``avatar`` defaults (plus the ``--tiny`` ones),
the batch's ``--config`` file, the batch's flags, the job's own settings. A job whose
directory already holds a checkpoint resumes (``config.resolve(..., resume=True)``: its
saved settings must match), one whose ``metrics.json`` reports every step is finished.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from .. import config as config_mod

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
RESERVED_NAMES = ("summary.json", "tiny_assets")  # what the batch itself writes in --out
# one process loads the networks once and stacks every avatar into one call: these must agree
SHARED = ("sd_model", "controlnet", "device", "precision", "latent_size", "tiny")


@dataclasses.dataclass
class Job:
    """One avatar of a batch.

    Attributes:
        name: its directory under the batch's ``--out``.
        settings: its own settings (checked ``AvatarConfig`` fields, ``out`` excluded).
        cfg: the resolved ``AvatarConfig`` (``resolve_jobs``), ``cfg.out`` = ``<out>/<name>``.
        resume: its directory holds a checkpoint to continue.
        finished: its ``metrics.json`` reports ``cfg.steps`` steps (skipped on rerun).
    """

    name: str
    settings: dict
    cfg: object = None
    resume: bool = False
    finished: bool = False


def _slug(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40].rstrip("-") or "avatar"


def _parse(path: Path):
    """The raw items of the JOBS file: strings or mappings."""
    data = config_mod.load_structured(path, "jobs")
    if data is None and path.suffix.lower() not in (".json", ".yaml", ".yml"):
        lines = (line.strip() for line in path.read_text().splitlines())
        return [line for line in lines if line and not line.startswith("#")]
    return data


def read_jobs(path) -> list:
    """The jobs of a JOBS file, in order, with unique checked names.

    Raises:
        FileNotFoundError: no such file.
        ValueError / TypeError: a directory, an empty list, an item that is neither a prompt nor a
            mapping, an unknown or ill-typed setting, a bad or repeated name (the message
            names the item).
        ImportError: a YAML file without PyYAML.
    """
    path = Path(path)
    if path.is_dir():  # no jobs-file-inside-a-directory convention: refused, not "no such file"
        raise ValueError(f"jobs: expected a text, JSON or YAML file of avatar jobs, got {str(path)!r} (a directory)")
    if not path.is_file():
        raise FileNotFoundError(f"jobs: expected a text, JSON or YAML file of avatar jobs, got {str(path)!r} (no such file)")
    items = _parse(path)
    if not isinstance(items, list) or not items:
        got = "an empty list" if isinstance(items, list) else type(items).__name__
        raise ValueError(f"jobs: expected a non-empty list of prompts or settings in {str(path)!r}, got {got}")
    jobs, seen = [], {}
    for number, item in enumerate(items, 1):
        where = f"jobs: item {number} of {str(path)!r}"
        if isinstance(item, str):
            item = {"prompt": item}
        if not isinstance(item, dict):
            raise TypeError(f"{where}: expected a prompt or a mapping of settings, got {type(item).__name__} {item!r}")
        item = dict(item)
        name = item.pop("name", None)
        if "out" in item:
            raise ValueError(f"{where}: expected no 'out' (each job trains into <--out>/<name>), got {item['out']!r}")
        settings = config_mod.normalize_keys(item, where)
        if name is None:
            name = f"{number:03d}-{_slug(settings.get('prompt', ''))}"
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"{where}: expected a name of letters, digits, '.', '_', '-' (at most 80), got {name!r}")
        if name in RESERVED_NAMES:
            raise ValueError(f"{where}: expected a name other than {', '.join(RESERVED_NAMES)} (the batch's own), got {name!r}")
        if name in seen:
            raise ValueError(f"{where}: expected a unique name, got {name!r} (also item {seen[name]})")
        seen[name] = number
        jobs.append(Job(name, settings))
    return jobs


def resolve_jobs(jobs: list, base: dict, config_file, out, tiny_assets=None) -> list:
    """Resolve every job's ``AvatarConfig`` and its state on disk (fresh, resume, finished).

    Args:
        jobs: from ``read_jobs``.
        base: settings given as the batch's flags (``AvatarConfig`` names).
        config_file: the batch's ``--config`` file or None.
        out: the batch's output directory.
        tiny_assets: ``{"sd_model", "controlnet", "body"}`` paths that fill a ``--tiny``
            job's empty ones (the batch builds them once), or None.

    Raises:
        ValueError / TypeError: invalid settings, a resumed job whose fixed settings changed,
            or jobs that disagree on a ``SHARED`` setting (the message names both jobs).
    """
    shared = {}
    from_file = config_mod.read_config_file(config_file) if config_file else {}
    for job in jobs:
        explicit = {**from_file, **base, **job.settings}
        explicit["out"] = str(Path(out) / job.name)
        if tiny_assets and explicit.get("tiny"):
            explicit.update({k: v for k, v in tiny_assets.items() if not explicit.get(k)})
        job_dir = Path(explicit["out"])
        job.resume = (job_dir / "checkpoints" / "last.pt").is_file() and (job_dir / config_mod.CONFIG_NAME).is_file()
        try:
            job.cfg = config_mod.resolve(explicit, None, resume=job.resume)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"job {job.name!r}: {exc}") from exc
        job.finished = job.resume and _finished_steps(job_dir) >= job.cfg.steps
        for key in SHARED:
            value = getattr(job.cfg, key)
            first = shared.setdefault(key, (job.name, value))
            if first[1] != value:
                raise ValueError(
                    f"jobs: expected every job to share {key} (one model load, one stacked network call), "
                    f"got {first[1]!r} in job {first[0]!r} and {value!r} in job {job.name!r}"
                )
    return jobs


def _finished_steps(job_dir: Path) -> int:
    """The steps ``metrics.json`` reports (0 when absent or unreadable)."""
    try:
        return int(json.loads((job_dir / "metrics.json").read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def finished_metrics(job_dir) -> dict:
    """A finished job's ``metrics.json`` (for the summary of a rerun)."""
    return json.loads((Path(job_dir) / "metrics.json").read_text())
