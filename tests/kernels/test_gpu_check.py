"""The prepared GPU check (scripts/gpu_check.sh and its parts) without a GPU.

A GPU is lent for minutes at a time: everything in the check that can fail for a reason
visible here is run here. The dry run executes each step's GPU-free part through the same
runner (timeouts, logs, key numbers, summary table, results folder); the sanitizer script
runs its driver on the CPU under a stand-in compute-sanitizer; the driver, the benchmark's
input rotation and the wheel checker are tested directly.
"""

import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "bench")]

import bench_cuda  # noqa: E402
import bench_routes  # noqa: E402
import gpu_budget  # noqa: E402
import gpu_check_wheels  # noqa: E402
import sanitize_driver  # noqa: E402

ENV = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": ""}


def _run(args, env=ENV, timeout=300):
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _table_rows(markdown):
    """Data rows of the last markdown table in the text, as lists of stripped cells."""
    lines = markdown.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("|---")) + 1
    rows = [line for line in lines[start:] if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows]


# ------------------------------------------------------------------------------ gpu_check.sh
STEP_NAMES = ["env", "build", "tests", "jax", "routes", "sanitize", "bench", "gpu-tests", "avatar", "extra"]


def test_dry_run_passes_every_step_proves_the_budget_and_fits_the_device_tool(tmp_path):
    results = tmp_path / "results"
    done = _run(["bash", "scripts/gpu_check.sh", "--dry-run", str(results)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "steps 1-9 passed" in done.stdout.splitlines()[-1]
    summary = (results / "summary.md").read_text()
    rows = _table_rows(summary)
    assert [r[1] for r in rows] == STEP_NAMES
    assert all(r[2] == "PASS" for r in rows), summary
    assert sum(int(r[4]) for r in rows[:9]) <= 560 - 8  # the budgets leave the reserve for the end
    assert f"{len(sanitize_driver.CASES)} driver cases listed" in summary
    assert "package view imports" in summary and "budget holds" in summary
    # The device tool returns at most 8 files, named in letters, digits, '.', '_' and '-'.
    files = sorted(p.name for p in results.iterdir())
    assert files == ["details.tar.gz", "gpu_check.log", "summary.md"]
    log = (results / "gpu_check.log").read_text()
    assert "bench_cuda dry run" in log and "bench_routes dry run" in log and "===== step 10/10: extra PASS" in log
    assert "test_cuda.py" in rows[2][5] and "test_jax" not in rows[2][5]  # JAX files: step 4, a process each
    assert "test_jax.py" in rows[3][5]
    # The budget table is printed, and every build the budget lists starts for sm_90 alone.
    assert "| module |" in log and "gpu_budget: holds" in log
    builds = [line for line in log.splitlines() if " at t = 0: env " in line]
    assert sorted(line.split()[1] for line in builds) == sorted(
        n for n, b in gpu_budget.load()["builds"].items() if (ROOT / b["builder"]).exists())
    assert all("SSD_TOOLKIT_CUDA_ARCHS=90 " in line for line in builds), builds


def _details(results):
    import tarfile

    with tarfile.open(results / "details.tar.gz") as tar:
        return {Path(n).name for n in tar.getnames()}


def test_a_hung_step_times_out_and_the_later_steps_still_run(tmp_path):
    """A step that hangs is killed at its deadline (its own budget plus what earlier steps
    left); the steps after it run, and summary.md and details.tar.gz hold every step."""
    results = tmp_path / "results"
    env = {**ENV, "SSD_GPU_CHECK_FAKE_HANG": "3", "SSD_GPU_CHECK_BUDGETS": "10,20,3,40,20,20,20,20,20"}
    done = _run(["bash", "scripts/gpu_check.sh", "--dry-run", "--only", "1,2,3,4", str(results)], env=env)
    assert done.returncode == 1, done.stdout[-3000:]
    rows = _table_rows((results / "summary.md").read_text())
    assert [r[2] for r in rows] == ["PASS", "PASS", "TIMEOUT", "PASS"] + ["SKIP"] * 6, rows
    assert int(rows[2][3]) <= 33 + 6 and rows[2][5].startswith("killed at")
    assert {"step1_env.log", "step2_build.log", "step3_tests.log", "step4_jax.log"} <= _details(results)
    assert "fake hang in step 3" in (results / "gpu_check.log").read_text()


def test_a_run_killed_mid_step_leaves_the_finished_steps(tmp_path):
    """The device tool ends a command at its limit: whatever point the run is killed at,
    summary.md names the finished steps and the one that was running, and details.tar.gz
    holds the finished steps' files."""
    import signal
    import time

    results = tmp_path / "results"
    env = {**ENV, "SSD_GPU_CHECK_FAKE_HANG": "3"}
    proc = subprocess.Popen(["bash", "scripts/gpu_check.sh", "--dry-run", "--only", "1,2,3", str(results)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "step 3 running" not in (
                (results / "summary.md").read_text() if (results / "summary.md").exists() else ""):
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole run, its timeout and the hung step
        proc.wait()
    rows = _table_rows((results / "summary.md").read_text())
    assert [r[2] for r in rows[:4]] == ["PASS", "PASS", "RUNNING", "PENDING"], rows
    assert {"step1_env.log", "step2_build.log", "key_env"} <= _details(results)
    assert "===== step 3/10: tests" in (results / "gpu_check.log").read_text()


def test_the_cpu_only_test_list_names_existing_files():
    """gpu_check.sh runs every test file of tests/kernels on the GPU but the CPU-only ones it
    lists: a renamed file must not slip into (or out of) the GPU run unnoticed."""
    text = (ROOT / "scripts" / "gpu_check.sh").read_text()
    listed = text.split('CPU_ONLY_TESTS=" ', 1)[1].split('"', 1)[0].split()
    assert listed and all((ROOT / "tests" / "kernels" / name).is_file() for name in listed), listed
    assert "test_cuda.py" not in listed


@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "11"], "--only/--skip: expected step numbers 1-10"),
        (["--bogus"], "expected --dry-run, --prepare"),
        (["a", "b"], "expected one results directory"),
        (["--dry-run"], "SSD_GPU_CHECK_BUDGETS: expected 9 comma-separated budgets"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, message):
    env = {**ENV, "SSD_GPU_CHECK_BUDGETS": "1,2"} if "BUDGETS" in message else ENV
    done = _run(["bash", "scripts/gpu_check.sh", *args], env=env)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


# --------------------------------------------------------------------------- cuda_sanitize.sh
def _stand_in_sanitizer(bin_dir, report_error):
    """A compute-sanitizer that drops its options (each takes a value), runs the program and
    prints a summary: clean, or one error with the --error-exitcode status."""
    bin_dir.mkdir()
    script = bin_dir / "compute-sanitizer"
    script.write_text(
        "#!/usr/bin/env bash\n"
        'while [[ "${1:-}" == --* ]]; do shift 2; done\n'
        '"$@"; rc=$?\n'
        + ('echo "========= Invalid __global__ read of size 4 bytes"\n'
           'echo "========= ERROR SUMMARY: 1 error"; exit 99\n' if report_error else
           'echo "========= ERROR SUMMARY: 0 errors"; exit $rc\n')
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("report_error", (False, True), ids=("clean", "error"))
def test_sanitize_script_summarises_each_tool(tmp_path, report_error):
    _stand_in_sanitizer(tmp_path / "bin", report_error)
    env = {**ENV, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
           "SSD_SANITIZE_DRIVER_ARGS": "--device cpu --only f32-c16 f64-split-mis"}
    out = tmp_path / "sanitize"
    tools = ["memcheck"] if report_error else ["memcheck", "synccheck"]
    done = _run(["bash", "scripts/cuda_sanitize.sh", *tools, "--jobs", "2", "--out", str(out)], env=env)
    rows = _table_rows((out / "sanitizer.md").read_text())
    assert [r[0] for r in rows] == tools
    if report_error:
        assert done.returncode == 1 and rows[0][1:3] == ["ERRORS", "99"]
        assert "Invalid __global__ read" in done.stdout  # the first reports are printed
    else:
        assert done.returncode == 0, done.stdout + done.stderr
        assert all(r[1] == "clean" and r[5].startswith("2 cases, 2 ok") for r in rows), rows


def _write_stand_in(bin_dir, body):
    bin_dir.mkdir()
    script = bin_dir / "compute-sanitizer"
    script.write_text("#!/usr/bin/env bash\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_sanitize_script_bounds_its_reruns_and_always_writes_its_table(tmp_path):
    """Tools that end without a summary beside the others are rerun alone only in the time
    the deadline leaves (was: one after another, each with the full timeout); the table is
    written even so. The stand-in ends at once without a summary in the first 2 s (as a
    failed start beside the others would), and hangs when rerun."""
    import time

    t0 = tmp_path / "t0"
    _write_stand_in(tmp_path / "bin", f'[ -f {t0} ] || date +%s >{t0}\n'
                                      f'if [ $(( $(date +%s) - $(cat {t0}) )) -lt 2 ]; then sleep 2; exit 3; fi\n'
                                      'sleep 60\n')
    env = {**ENV, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SSD_SANITIZE_DRIVER_ARGS": "--device cpu"}
    out = tmp_path / "sanitize"
    start = time.monotonic()
    done = _run(["bash", "scripts/cuda_sanitize.sh", "memcheck", "racecheck", "synccheck", "--jobs", "3",
                 "--timeout", "60", "--deadline", "18", "--out", str(out)], env=env)
    elapsed = time.monotonic() - start
    rows = _table_rows((out / "sanitizer.md").read_text())
    assert done.returncode == 1 and [r[0] for r in rows] == ["memcheck", "racecheck", "synccheck"], done.stdout
    assert elapsed < 18 + 4, elapsed
    assert rows[0][1:3] == ["TIMEOUT (rerun alone)", "124"], rows
    assert all(r[1] == "FAILED (no time to rerun alone)" for r in rows[1:]), rows


def test_sanitize_script_writes_its_table_when_killed(tmp_path):
    """An outer timeout's TERM mid-run still leaves sanitizer.md, the unfinished tool marked."""
    _write_stand_in(tmp_path / "bin", "sleep 30\n")
    env = {**ENV, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SSD_SANITIZE_DRIVER_ARGS": "--device cpu"}
    out = tmp_path / "sanitize"
    done = _run(["timeout", "3", "bash", "scripts/cuda_sanitize.sh", "memcheck", "--out", str(out)], env=env, timeout=60)
    assert done.returncode != 0
    rows = _table_rows((out / "sanitizer.md").read_text())
    assert [r[:2] for r in rows] == [["memcheck", "NOT-FINISHED"]], rows


def test_sanitize_script_rejects_unknown_tools():
    done = _run(["bash", "scripts/cuda_sanitize.sh", "leakcheck"])
    assert done.returncode == 2 and "expected memcheck, racecheck" in done.stderr


# ---------------------------------------------------------------------------- sanitize_driver
def test_driver_cases_cover_every_dtype_path_and_access_width():
    cases = sanitize_driver.CASES
    assert len(cases) >= 40 and len({c.name for c in cases}) == len(cases)
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        mine = [c for c in cases if c.dtype == dtype]
        assert {c.offset for c in mine} == {0, 1}, dtype  # 16-byte and scalar access
        assert "split" in {c.path for c in mine}, dtype
    assert {c.path for c in cases} == {"auto", "no_cluster", "split"}
    assert {c.t for c in cases} == {"mixed", "device", "low", "high", "at_m"}
    assert {c.values for c in cases} == {"normal", "nonfinite", "collinear", "zero_noise"}
    assert {(c.B == 0, c.N == 0) for c in cases} >= {(True, False), (False, True)}


def test_driver_cases_reach_every_kernel_instantiation_on_an_h100():
    """Through the CUDA emulation's launch planner (the .cu's own plan code) for a pretend
    H100: every resident (dtype, packs per thread, access width), every split (dtype,
    access width) and every cluster size 1-16 is launched by some case."""
    try:
        import cuda_emulation_build

        emu = cuda_emulation_build.load()
    except Exception as exc:  # noqa: BLE001 - no compiler or pybind11: nothing to plan with
        pytest.skip(f"CUDA emulation not buildable here: {exc}")
    h100 = {"major": 9, "sms": 132, "binary_version": 90, "ptx_version": 90, "max_cluster": 16}
    reached, clusters = set(), set()
    for c in sanitize_driver.CASES:
        if c.B == 0:
            continue
        words = dict(w.split("=") for w in emu.plan(c.N, c.dtype, c.offset == 0, c.path, 0, h100).split()[1:])
        kind = "split" if "nchunks" in words else f"vpt={words['vpt']}"
        reached.add((c.dtype, kind, words["vec"]))
        clusters.add(int(words.get("cluster", 1)))
    dtypes, widths = ("float16", "bfloat16", "float32", "float64"), ("16B", "scalar")
    kinds = ("vpt=1", "vpt=2", "vpt=4", "split")
    missing = {(d, k, w) for d in dtypes for k in kinds for w in widths} - reached
    assert not missing, sorted(missing)
    assert clusters == {1, 2, 4, 8, 16}


def test_driver_checks_results_on_the_cpu(monkeypatch, capsys):
    n = len(sanitize_driver.CASES)
    assert sanitize_driver.main(["--device", "cpu"]) == 0
    assert f"{n} cases, {n} ok, 0 failed" in capsys.readouterr().out
    import ssd_toolkit

    estimate = ssd_toolkit.estimate

    def off_by_one_percent(*args, **kwargs):
        result = estimate(*args, **kwargs)
        return (result[0] * 1.01, result[1]) if isinstance(result, tuple) else result * 1.01

    monkeypatch.setattr(ssd_toolkit, "estimate", off_by_one_percent)
    assert sanitize_driver.main(["--device", "cpu", "--only", "f32-c8-v2", "f64-mis"]) == 1
    assert "2 cases, 0 ok, 2 failed" in capsys.readouterr().out


def test_driver_switches_the_self_test_fallback_off(monkeypatch):
    """Under the sanitizer a failed self-test must not hand the device to eager PyTorch (whose
    results would pass the driver's checks): the driver turns it off unless strict is asked."""
    monkeypatch.setenv("SSD_TOOLKIT_CUDA_SELFTEST", "1")
    assert sanitize_driver.main(["--list"]) == 0
    assert os.environ["SSD_TOOLKIT_CUDA_SELFTEST"] == "0"
    monkeypatch.setenv("SSD_TOOLKIT_CUDA_SELFTEST", "strict")
    assert sanitize_driver.main(["--list"]) == 0
    assert os.environ["SSD_TOOLKIT_CUDA_SELFTEST"] == "strict"


# ---------------------------------------------------------------------------------- bench_cuda
@pytest.mark.parametrize("argv", ([], ["--short"]), ids=("full", "short"))
def test_bench_rotation_exceeds_twice_the_l2_at_every_row(argv):
    args = bench_cuda.parse_args(argv)
    l2 = 50 * 2**20
    rows = bench_cuda.plan_rows(args)
    assert ("64,4,128,128", "float32", "no_cluster", "default") in rows and ("64,4,128,128", "float32", "split", "default") in rows
    for variant in ("threads256", "relaxed_arrive", "threads256,relaxed_arrive"):  # beside today's plan
        assert ("64,4,128,128", "float32", "auto", variant) in rows and ("8,4,64,64", "float32", "auto", variant) in rows
    for shape, dtype, _, _ in rows:
        n_sets, set_bytes = bench_cuda.rotation(tuple(int(s) for s in shape.split(",")), dtype, l2)
        assert n_sets >= 2 and n_sets * set_bytes >= 2 * l2, (shape, dtype)
    assert bench_cuda.rotation((1, 4, 64, 64), "float16", l2)[0] > 64  # the old cap left this in L2
    if argv:
        assert (args.calls, args.repeats, args.compile_shapes, args.compile_dtypes) == (20, 5, ["8,4,64,64"], ["float32"])


def test_bench_arguments_are_checked(capsys):
    for argv in (["--shapes", "4,x"], ["--repeats", "0"], ["--dtypes", "int8"]):
        with pytest.raises(SystemExit) as exit_info:
            bench_cuda.parse_args(argv)
        assert exit_info.value.code == 2
    assert "expected" in capsys.readouterr().err


SMOKE = ["--device", "cpu", "--shapes", "2,4,8,8", "--dtypes", "float32", "--forced-shape", "2,4,8,8", "--calls", "2",
         "--repeats", "2", "--warmup", "1", "--copy-mib", "1", "--no-compile", "--l2-mib", "0.05"]


def test_bench_rows_check_against_eager_and_fail_loudly(tmp_path, monkeypatch, capsys):
    """The whole measurement loop on the CPU kernel (wall-clock, no graphs): every row is
    checked; a result off by 1% is marked FAIL, named in the notes, and the exit status is 1."""
    import json

    import ssd_toolkit

    assert bench_cuda.main([*SMOKE, "--out-dir", str(tmp_path / "ok")]) == 0
    written = json.loads((tmp_path / "ok" / "cuda_smoke_on_cpu.json").read_text())
    assert written["params"]["complete"] is True  # rewritten after every row, marked complete at the end
    rows = written["rows"]
    assert [(r["path"], r["check"]) for r in rows] == [("auto", "ok"), ("no_cluster", "ok"), ("split", "ok")]
    assert all(r["input_sets"] * 4 * r["N"] * 2 * 4 >= 2 * 0.05 * 2**20 for r in rows)  # rotation >= 2x "L2"
    estimate = ssd_toolkit.estimate
    monkeypatch.setattr(ssd_toolkit, "estimate", lambda *a, **k: estimate(*a, **k) * 1.01)
    assert bench_cuda.main([*SMOKE, "--out-dir", str(tmp_path / "bad")]) == 1
    assert "CHECK FAILURES" in (tmp_path / "bad" / "cuda_smoke_on_cpu.md").read_text()
    assert "outside the tolerance table" in capsys.readouterr().err


def test_bench_plans_cover_every_path_and_reset_it():
    calls = []

    class Module:
        def cuda_set_path(self, path):
            calls.append(path)

        def cuda_launch_plan(self, N, dtype, aligned):
            return f"{calls[-1]}:{N}:{dtype}:{aligned}"

    bench_cuda.print_plans(Module(), ["8,4,64,64"])
    assert calls[-1] == "auto" and set(calls) == {"auto", "no_cluster", "split"}


# ------------------------------------------------------------------------------------- wheels
def _wheel(folder, name, version, tag="py3-none-any", requires=()):
    path = folder / f"{name}-{version}-{tag}.whl"
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{info}/METADATA", meta)
        zf.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def test_wheel_checker(tmp_path, monkeypatch):
    listing = tmp_path / "wheels.txt"
    listing.write_text("# comment\nalpha==1.0\nbeta_pkg==2.0\n")
    folder = tmp_path / "whl"
    folder.mkdir()
    _wheel(folder, "alpha", "1.0", requires=["numpy>=1", "beta-pkg", "tomli; python_version < '3.11'",
                                             "pytest; extra == 'test'"])
    _wheel(folder, "beta_pkg", "2.0", tag="cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64")
    problems, notes = gpu_check_wheels.check(listing, folder)
    assert problems == [] and "2 wheels" in notes[-1]  # pip --dry-run accepted them too

    monkeypatch.setattr(gpu_check_wheels, "pip_dry_run", lambda wheels: [])
    _wheel(folder, "alpha", "1.1", requires=["not-on-the-machine"])
    _wheel(folder, "gamma", "1.0", tag="cp311-cp311-win_amd64")
    problems, _ = gpu_check_wheels.check(listing, folder)
    text = "\n".join(problems)
    assert "alpha: two wheels" in text and "expected version 1.0" in text
    assert "gamma-1.0-cp311-cp311-win_amd64.whl: expected py3-none-any or cp312" in text
    assert "not in" in text and "requires not-on-the-machine" in text
    assert gpu_check_wheels.check(listing, tmp_path / "absent", allow_missing=True)[0] == []
    assert "not fetched" in gpu_check_wheels.check(listing, tmp_path / "absent")[0][0]
    listing.write_text("alpha>=1\n")
    assert "expected 'name==version' lines" in gpu_check_wheels.check(listing, folder)[0][0]


def test_results_files_name_the_gpu_driver_and_commit(tmp_path, monkeypatch):
    import types

    import common

    props = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132,
                                  L2_cache_size=50 * 2**20, total_memory=80 * 2**30)
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(get_device_properties=lambda i: props),
                                       version=types.SimpleNamespace(cuda="13.0"))
    machine = {**common.machine_info(), **common.gpu_info(fake_torch)}
    assert machine["sms"] == 132 and machine["l2_mib"] == 50.0 and machine["driver"]
    name = "cuda_" + common.gpu_slug(machine["gpu"])
    assert name == "cuda_nvidia_h100_80gb_hbm3"
    text = common.write_results(name, [{"a": 1.0}], [("a", "a", "{:.1f}")], {"p": 1}, machine, out_dir=tmp_path)
    assert "GPU: NVIDIA H100 80GB HBM3, driver" in text and f"commit {machine['git_commit']}" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.json", f"{name}.md"]
    monkeypatch.setenv("SSD_GIT_COMMIT", "abc1234+2-uncommitted")
    monkeypatch.setattr(common, "ROOT", tmp_path)  # no .git here: the device's copy of the tree
    assert common.git_commit() == "abc1234+2-uncommitted"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the machine without a GPU")
def test_build_step_refuses_to_rebuild_the_checkout_without_a_gpu(tmp_path):
    modules = sorted((ROOT / "ssd_toolkit").glob("_C*.so"))
    before = [m.stat().st_mtime_ns for m in modules]
    done = _run(["bash", "scripts/gpu_check.sh", "--only", "2", str(tmp_path)])
    assert done.returncode == 1
    assert "step 2 builds only where a CUDA device is" in (tmp_path / "gpu_check.log").read_text()
    assert [m.stat().st_mtime_ns for m in modules] == before


def test_bench_times_threads256_first_at_the_bandwidth_shape():
    """The predicted best plan is the first row, today's plan beside it (issue 32 item 5)."""
    for argv in ([], ["--short"]):
        rows = bench_cuda.plan_rows(bench_cuda.parse_args(argv))
        assert rows[:2] == [("64,4,128,128", "float32", "auto", "threads256"), ("64,4,128,128", "float32", "auto", "default")]
        assert len(rows) == len(set(rows))


def test_bench_on_the_cpu_needs_no_cuda_binding(tmp_path, monkeypatch):
    """A CPU-only build (no cuda_* functions in _C) runs --device cpu (the dry run's smoke step)."""
    from ssd_toolkit.engine import extension as _extension

    real = _extension.load()

    class CpuOnly:
        def __getattr__(self, name):
            if name.startswith("cuda_"):
                raise AttributeError(name)
            return getattr(real, name)

    monkeypatch.setattr(_extension, "load", lambda: CpuOnly())
    assert bench_cuda.main([*SMOKE, "--variants", "--out-dir", str(tmp_path)]) == 0


# ------------------------------------------------------------------------------------- budget
def _budget():
    import copy

    return copy.deepcopy(gpu_budget.load())


def test_the_budget_holds_and_names_the_checks_steps():
    budget = _budget()
    rows, problems = gpu_budget.evaluate(budget)
    assert problems == []
    assert [s["name"] for s in budget["steps"]] == STEP_NAMES
    text = (ROOT / "scripts" / "gpu_check.sh").read_text()
    for name in STEP_NAMES:  # each share has its step, and what it waits for is a measured build
        assert f"step_{name.replace('-', '_')}() {{" in text, name
    for step in budget["steps"]:
        assert set(step.get("waits_for", [])) <= set(budget["builds"]), step


@pytest.mark.parametrize("change, message", [
    (lambda b: b["steps"][2].update(run_s=200), "step 3 tests: ends by"),
    (lambda b: b["builds"]["module"].update(chain_s=60), "step 2 build: ends by"),
    (lambda b: b["builds"]["jax"].update(cpu_s=2000), "step 3 tests: ends by"),  # 16 cores crowded
    (lambda b: b["builds"]["module"].update(source_bytes=10), "build module: sources grew"),
    (lambda b: b["builds"]["module"].update(  # 1.9x the sources: taken as 1.9x the CPU-seconds
        source_bytes=int(gpu_budget.source_bytes(b["builds"]["module"]["sources"]) / 1.9)), "step 2 build: ends by"),
    (lambda b: b["builds"]["jax"].update(cpu_s=None), "build jax: ssd_toolkit/engine/jax_build.py exists but"),
    (lambda b: b["steps"][1].update(share_s=300), "sum to"),
])
def test_the_budget_fails_when_a_share_is_exceeded(change, message):
    budget = _budget()
    change(budget)
    _, problems = gpu_budget.evaluate(budget)
    assert any(message in p for p in problems), problems


def test_the_budget_table_in_the_docs_is_the_budgets():
    """docs/gpu.md holds `python scripts/gpu_budget.py --markdown` between its markers."""
    docs = (ROOT / "docs" / "gpu.md").read_text()
    start, end = "<!-- budget table: python scripts/gpu_budget.py --markdown -->\n", "\n<!-- end of the budget table -->"
    assert start in docs and end in docs
    assert docs.split(start, 1)[1].split(end, 1)[0].strip() == gpu_budget.markdown(gpu_budget.load()).strip()


# ---------------------------------------------------------------------------------- bench_routes
@pytest.mark.parametrize("planted", (False, True), ids=("exact", "one-ulp-off"))
def test_routes_parity_demands_the_emulations_bits(planted):
    """bench_routes' check on the CPU: a stand-in route that runs the emulation itself gives
    0 ulp and passes; one unit in the last place off in one element fails the case."""
    import cuda_emulation_build  # noqa: PLC0415 - tests/ helper
    import torch

    emu = cuda_emulation_build.load()

    class EmulatedRoute(bench_routes.Route):
        name = "emulated"

        def prepare(self, host, t):
            def call():
                out = torch.empty_like(host[0])
                t64 = torch.as_tensor(t, dtype=torch.float64).contiguous()
                emu.estimate(*(x.data_ptr() for x in host), out.data_ptr(), t64.data_ptr(), 0.0, 0, *out.shape,
                             "float32", bench_routes.M)
                if planted:
                    out.view(torch.int32)[0, 3] += 1
                return out
            return call

        def to_host(self, result):
            return result

    from common import mixed_timesteps  # noqa: PLC0415 - bench/ helper

    t = mixed_timesteps(8, bench_routes.M)
    case = bench_routes.expected(torch, emu, {}, (8, 16384), "float32", t)
    row = bench_routes.parity(torch, emu, {}, EmulatedRoute(torch), case, t, "float32")
    assert (row["ulp_max"], row["ulp_differing"], row["ok"]) == ((1, 1, False) if planted else (0, 0, True)), row
    assert row["plan"].startswith("resident") and row["reference"] == "ok"  # 1 ulp is within the tolerance table
    assert "| emulated | float32 | 8x16384 |" in bench_routes.markdown({"emulated": "x"}, [row], [])
