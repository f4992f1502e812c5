"""The GPU check's time budget (scripts/gpu_check.sh, docs/gpu.md), from measured builds.

One lease runs one command of at most 600 s. scripts/gpu_budget.json holds each step's
share and run estimate, and the CPU-seconds of every build the run starts at t = 0,
measured on this project's CPU machine. A build's finish on the GPU machine is estimated
as max(its critical path, all t = 0 builds' CPU-seconds / the machine's 16 cores), times
SAFETY (the GPU machine's cores are not measured). A step that waits for a build must end
by its cumulative deadline even when the build ends late:
    max(the earlier steps' deadline, SAFETY x finish of each build it needs) + run <= its deadline.

    python scripts/gpu_budget.py              # the budget table; exit 1 when a share is exceeded
    python scripts/gpu_budget.py --shares     # name:share of every step, for gpu_check.sh
    python scripts/gpu_budget.py --builds     # the builds the check must start (their builder exists)
    python scripts/gpu_budget.py --markdown   # the table as docs/gpu.md holds it
    python scripts/gpu_budget.py --measure [module jax emulation torch_op]
                                              # rebuild in a temporary copy, record the CPU-seconds

The check takes a build whose sources grew since they were measured as that much slower
(its CPU-seconds times the growth), and fails when they more than doubled (measure again)
and when a builder in the tree (e.g. ssd_toolkit/engine/torch_op_build.py, the C++ torch op
library's) has a build that was never measured. The table (--markdown, docs/gpu.md) shows
the measured numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_FILE = ROOT / "scripts" / "gpu_budget.json"
SAFETY = 1.5        # the GPU machine's per-core speed is not measured: builds may take 1.5x
STALE_FACTOR = 2.0   # sources this much larger than measured: the measurement is stale
ARCH = "90"          # the GPU machine's architecture (H100/H200): every device build targets it alone


def load(path=BUDGET_FILE):
    return json.loads(Path(path).read_text())


def source_bytes(patterns, root=ROOT):
    """Total size of the files matching the glob patterns (relative to root)."""
    return sum(p.stat().st_size for pattern in patterns for p in root.glob(pattern) if p.is_file())


def growth(build, root=ROOT):
    """How much the build's sources grew since they were measured (at least 1)."""
    return max(1.0, source_bytes(build["sources"], root) / build["source_bytes"])


def build_finish(budget, root=None):
    """{build: estimated seconds from t = 0 to its end on the GPU machine, before SAFETY}; with
    ``root``, each build's CPU-seconds scaled by the growth of its sources there."""
    cores = budget["device_cores"]
    measured = {name: b for name, b in budget["builds"].items() if b.get("cpu_s") is not None}
    scale = {name: growth(b, root) if root else 1.0 for name, b in measured.items()}
    crowd = sum(b["cpu_s"] * scale[n] for n, b in measured.items()) / cores  # all t = 0 builds share the cores
    return {name: max(b["chain_s"] * scale[name], crowd) for name, b in measured.items()}


def evaluate(budget, root=ROOT, scaled=True):
    """``(rows, problems)``: one row per step (name, share, deadline, builds it waits for,
    run estimate, latest end, slack) and the reasons the budget does not hold; ``scaled``:
    builds taken as slower by the growth of their sources under ``root`` since measured."""
    problems = []
    total, reserve = budget["total_s"], budget["reserve_s"]
    steps = budget["steps"]
    for name, b in budget["builds"].items():
        builder = root / b["builder"]
        if b.get("cpu_s") is None:
            if builder.exists():
                problems.append(f"build {name}: {b['builder']} exists but its build was never measured "
                                f"(python scripts/gpu_budget.py --measure {name})")
            continue
        now = source_bytes(b["sources"], root)
        if now > STALE_FACTOR * b["source_bytes"]:
            problems.append(f"build {name}: sources grew from {b['source_bytes']} to {now} bytes since measured, "
                            f"over {STALE_FACTOR:g}x (python scripts/gpu_budget.py --measure {name})")
    finish = build_finish(budget, root if scaled else None)
    rows, deadline = [], 0
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        start = deadline
        share = (total - reserve - deadline) if last else step["share_s"]
        deadline = total - reserve if last else deadline + share
        waits = [(w, SAFETY * finish[w]) for w in step.get("waits_for", []) if w in finish]
        end = max([start] + [t for _, t in waits]) + step["run_s"]
        rows.append({"n": i + 1, "name": step["name"], "share": share, "deadline": deadline, "waits": waits,
                     "run": step["run_s"], "end": end, "slack": deadline - end, "basis": step["basis"]})
        if not last and end > deadline:
            problems.append(f"step {i + 1} {step['name']}: ends by {end:.0f} s at the latest, after its deadline "
                            f"{deadline} s (share {share} s)")
    shares = sum(step["share_s"] for step in steps[:-1])
    if shares > total - reserve:
        problems.append(f"the shares of steps 1-{len(steps) - 1} sum to {shares} s, over {total} - {reserve} s")
    return rows, problems


def build_rows(budget):
    finish = build_finish(budget)
    rows = []
    for name, b in budget["builds"].items():
        if b.get("cpu_s") is None:
            rows.append((name, b["what"], "not measured", "-", "-", "-"))
        else:
            rows.append((name, b["what"], f"{b['cpu_s']:.1f}", f"{b['chain_s']:.1f}", f"{finish[name]:.1f}",
                         f"{SAFETY * finish[name]:.0f}"))
    return rows


def markdown(budget, root=ROOT):
    rows, _ = evaluate(budget, root, scaled=False)
    m = budget["measured"]
    lines = [f"Builds, started at t = 0 (measured {m['date']} on {m['machine']}; every device build for sm_{ARCH} "
             f"only; on the GPU machine's {budget['device_cores']} cores, x{SAFETY} for its unmeasured core speed):",
             "",
             "| build | what | CPU-s here | critical path CPU-s | done on 16 cores, s | x1.5, s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in build_rows(budget)]
    lines += ["", f"Steps ({budget['total_s']} s in all, {budget['reserve_s']} s reserved for the last summary):", "",
              "| # | step | share s | deadline s | waits for (done by, s) | run s | ends by, s | slack s | run estimate from |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        waits = ", ".join(f"{w} ({t:.0f})" for w, t in r["waits"]) or "-"
        optional = r["n"] == len(rows)  # the last step: only on time the others leave
        share = f"rest ({r['share']} at worst)" if optional else r["share"]
        slack = f"runs with >= {budget['last_step_min_s']} s left" if optional else f"{r['slack']:.0f}"
        lines.append(f"| {r['n']} | {r['name']} | {share} | {r['deadline']} | {waits} | {r['run']} | "
                     f"{r['end']:.0f} | {slack} | {r['basis']} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ measuring
def _cpu_children():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd, cwd, env):
    """CPU-seconds (user + system, children) of one command; raises on failure."""
    before = _cpu_children()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))[:200]} failed:\n{result.stderr[-3000:]}")
    return _cpu_children() - before


def _copy_tree(dest, ref=None):
    """The files a build needs, from the working tree, or from commit ``ref`` (``git archive``)."""
    if ref:
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return
    for item in ("setup.py", "pyproject.toml", "README.md", "csrc", "ssd_toolkit", "toy", "integrations", "tests"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__", "*.so", "build"))
        elif src.exists():
            shutil.copy2(src, dest / item)


def measure_module(tree, env):
    """setup.py build_ext --inplace for sm_90 alone, one job at a time: total CPU-seconds and
    the critical path (the longest compile plus the link, from ninja's log)."""
    env = {**env, "SSD_TOOLKIT_CUDA_ARCHS": ARCH, "MAX_JOBS": "1", "SSD_TOOLKIT_REQUIRE_BUILD": "1"}
    start = time.monotonic()
    cpu = _timed([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], tree, env)
    wall = time.monotonic() - start
    return {"cpu_s": cpu, "wall_s_here": wall, **_ninja_chain(next(tree.glob("build/**/ssd_toolkit_C/.ninja_log")), cpu)}


def _ninja_chain(log, cpu):
    """The critical path (the longest compile, then the link) of a ninja build run with one
    job, from its log: each edge's wall time, scaled so that the edges sum to ``cpu``."""
    edges = [line.split("\t") for line in log.read_text().splitlines()[1:]]
    times = {Path(e[3]).name: (int(e[1]) - int(e[0])) / 1000 for e in edges}
    scale = cpu / max(sum(times.values()), 1e-9)
    link = max((t for name, t in times.items() if name.endswith(".so")), default=0.0)
    compiles = [t for name, t in times.items() if not name.endswith(".so")]
    return {"chain_s": scale * (max(compiles, default=0.0) + link),
            "units": {name: round(scale * t, 1) for name, t in sorted(times.items())}}


def measure_jax(tree, env):
    """The JAX extension: the CPU extension, then the CUDA handler for sm_90 (one after the
    other, as jax_build.build runs them)."""
    sys.path.insert(0, str(tree))
    from ssd_toolkit.engine import jax_build  # noqa: PLC0415

    os.environ["SSD_TOOLKIT_CUDA_ARCHS"] = ARCH
    nvcc = shutil.which("nvcc")
    out = tree / "jax_out"
    out.mkdir()
    cpu_ext = _timed(jax_build.command(tree, out / "cpu.so"), tree, env)
    cmd = jax_build.cuda_command(tree, out / "cuda.so", nvcc)
    assert all("sm_" + ARCH in g or "compute_" + ARCH in g for g in cmd if g.startswith("-gencode")), cmd
    cuda = _timed(cmd, tree, env)
    return {"cpu_s": cpu_ext + cuda, "chain_s": cpu_ext + cuda, "units": {"cpu extension": round(cpu_ext, 1),
                                                                          "CUDA handler sm_90": round(cuda, 1)}}


def measure_emulation(tree, env):
    sys.path.insert(0, str(tree / "tests"))
    import cuda_emulation_build  # noqa: PLC0415

    cpu = _timed(cuda_emulation_build._command(tree / "emu.so", False), tree, env)
    return {"cpu_s": cpu, "chain_s": cpu, "units": {"one g++ unit": round(cpu, 1)}}


def measure_torch_op(tree, env):
    """The C++ torch op library (host code against torch's headers, no nvcc), one job at a time."""
    env = {**env, "SSD_TOOLKIT_CUDA_ARCHS": ARCH, "MAX_JOBS": "1", "PYTHONPATH": str(tree)}
    cpu = _timed([sys.executable, "-m", "ssd_toolkit.engine.torch_op_build"], tree, env)
    return {"cpu_s": cpu, **_ninja_chain(tree / "build" / "torch_op" / ".ninja_log", cpu)}


MEASURE = {"module": measure_module, "jax": measure_jax, "emulation": measure_emulation, "torch_op": measure_torch_op}


def measure(names, ref=None):
    """Builds each in a temporary copy of the tree (or of commit ``ref``) and records its
    CPU-seconds in the budget file, which is rewritten after each build."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"gpu_budget_{name}_") as tmp:
            tree = Path(tmp)
            _copy_tree(tree, ref)
            load_start = os.getloadavg()
            result = MEASURE[name](tree, env)
        budget = load()
        entry = budget["builds"][name]
        entry.update({k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()},
                     source_bytes=source_bytes(entry["sources"]),
                     loadavg=[round(x, 2) for x in load_start], tree=ref or "working tree")
        budget["measured"] = {"date": datetime.date.today().isoformat(),
                              "machine": f"this project's CPU machine ({os.cpu_count()} shared cores, load noted per "
                                         "build)"}
        BUDGET_FILE.write_text(json.dumps(budget, indent=1) + "\n")
        print(f"{name}: {entry['cpu_s']} CPU-s, critical path {entry['chain_s']} CPU-s, units {entry['units']}, "
              f"load {entry['loadavg']}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--shares", action="store_true", help="print name:share of every step (gpu_check.sh reads "
                      "them; the last step gets what is left: its number is the least it runs with)")
    mode.add_argument("--builds", action="store_true", help="print the builds whose builder is in the tree (the "
                      "check must start each)")
    mode.add_argument("--markdown", action="store_true", help="print the budget tables as markdown")
    mode.add_argument("--measure", nargs="*", choices=sorted(MEASURE), metavar="BUILD",
                      help=f"measure builds ({', '.join(sorted(MEASURE))}; default all whose builder exists)")
    parser.add_argument("--ref", default=None, help="with --measure: build commit REF's files (git archive), not the "
                        "working tree (when work in progress does not compile)")
    args = parser.parse_args(argv)
    if args.measure is not None:
        budget = load()
        names = args.measure or [n for n, b in budget["builds"].items() if (ROOT / b["builder"]).exists()]
        measure(names, args.ref)
        return 0
    budget = load()
    if args.builds:
        print(" ".join(n for n, b in budget["builds"].items() if (ROOT / b["builder"]).exists()))
        return 0
    if args.shares:
        last = len(budget["steps"]) - 1  # its number: the least time it runs with
        print(" ".join(f"{s['name']}:{budget['last_step_min_s'] if i == last else s['share_s']}"
                       for i, s in enumerate(budget["steps"])))
        return 0
    text = markdown(budget)
    print(text)
    _, problems = evaluate(budget)
    if args.markdown:
        return 0
    for problem in problems:
        print(f"gpu_budget: {problem}", file=sys.stderr)
    print(f"gpu_budget: {'FAILS' if problems else 'holds'}: " + (f"{len(problems)} problem(s)" if problems else
          "every step ends by its deadline with its builds x1.5"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
