"""torch.distributed for ``avatar-batch``: ranks from torchrun's environment, job shards, the
results gathered on rank 0 and its ``summary.json``.

Under ``torchrun`` (or ``srun`` exporting the same variables) ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` are set: rank r trains jobs ``r, r + N, r + 2N, ...`` on ``cuda:LOCAL_RANK``
(or the CPU), and the ranks meet once at the end to gather their results (gloo for these
objects; NCCL is not needed). Without them the process is rank 0 of 1 and nothing is
initialised.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from pathlib import Path

SUMMARY_NAME = "summary.json"
# the ranks meet only at the end: one may wait for another's avatars for days
GATHER_TIMEOUT = datetime.timedelta(days=30)


@dataclasses.dataclass
class Ranks:
    """This process's place: ``rank`` of ``world_size``, on local device ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, jobs: list) -> list:
        """This rank's jobs (round robin, so every rank gets a similar share)."""
        return jobs[self.rank :: self.world_size]


def _env_int(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: expected an integer (torchrun's environment), got {value!r}") from None


def ranks_from_env() -> Ranks:
    """``Ranks`` from ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (1 process when unset).

    Raises:
        ValueError: a malformed or inconsistent variable (names it).
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"RANK: expected 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, got RANK={rank}, "
                         f"WORLD_SIZE={world}, LOCAL_RANK={local}")
    return Ranks(rank, world, local)


def init(ranks: Ranks, use_cuda: bool):
    """Join the process group (torchrun's ``env://`` rendezvous) and pin ``cuda:LOCAL_RANK``."""
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415

    if use_cuda:
        if ranks.local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK: expected a GPU index below {torch.cuda.device_count()}, got {ranks.local_rank}")
        torch.cuda.set_device(ranks.local_rank)
    if ranks.distributed and not dist.is_initialized():
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if use_cuda else "gloo", timeout=GATHER_TIMEOUT)


def barrier(ranks: Ranks):
    if ranks.distributed:
        import torch.distributed as dist  # noqa: PLC0415

        dist.barrier()


def gather(ranks: Ranks, results: list) -> list | None:
    """Every rank's results on rank 0 (None elsewhere)."""
    if not ranks.distributed:
        return results
    import torch.distributed as dist  # noqa: PLC0415

    gathered = [None] * ranks.world_size if ranks.rank == 0 else None
    dist.gather_object(results, gathered, dst=0)
    return [r for part in gathered for r in part] if ranks.rank == 0 else None


def finish(ranks: Ranks):
    if ranks.distributed:
        import torch.distributed as dist  # noqa: PLC0415

        dist.destroy_process_group()


def status_counts(results: list) -> dict:
    """``{status: number of jobs}``."""
    counts = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return counts


def write_summary(out, jobs_file, results: list, order: list, ranks: Ranks, max_concurrent: int) -> Path:
    """``<out>/summary.json``: one entry per job in the JOBS file's order, and the counts."""
    from ..atomic import atomic_write_bytes  # noqa: PLC0415

    by_name = {r.name: dataclasses.asdict(r) for r in results}
    entries = [by_name[name] for name in order]
    summary = {
        "jobs_file": str(jobs_file),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "world_size": ranks.world_size,
        "max_concurrent": max_concurrent,
        "counts": status_counts(results),
        "jobs": entries,
    }
    path = Path(out) / SUMMARY_NAME
    atomic_write_bytes(path, (json.dumps(summary, indent=2) + "\n").encode())
    return path
