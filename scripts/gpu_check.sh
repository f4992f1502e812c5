#!/usr/bin/env bash
# GPU verification in one command of at most 600 s on an H200/H100 (issues 21, 22, 32; docs/gpu.md):
#   bash scripts/gpu_check.sh [RESULTS_DIR]          # on the GPU machine
#   bash scripts/gpu_check.sh --dry-run [RESULTS_DIR] # anywhere: every part that needs no GPU, and the budget
#   bash scripts/gpu_check.sh --prepare              # here, before a GPU run: wheels, commit, size, dry run
#   options: --only N,N  --skip N,N  (step numbers)
# RESULTS_DIR: the argument, else $SSD_GPU_OUT, else $OUT (the device tool's), else
# runs/gpu_check. It receives at most 7 files (the device tool returns 8), each rewritten as
# the run goes, so a run cut short at any point returns what it finished: gpu_check.log
# (everything, as it is printed), summary.md (the step table, the self-test's coverage, the
# routes and sanitizer tables; rewritten before and after every step), details.tar.gz (each
# finished step's log, pytest junit XML, sanitizer logs, routes JSON, ncu report; re-packed
# after every step), cuda_<gpu>.{json,md} (row by row), avatar_<gpu>.{json,md}.
# At t = 0 every build the run needs starts in the background, each for sm_90 alone
# (SSD_TOOLKIT_CUDA_ARCHS=90): the module (`setup.py build_ext --inplace`), the CPU emulation,
# the JAX extension and the C++ torch op library where the tree has their builders. Step
# shares come from scripts/gpu_budget.json (measured build CPU-seconds; the dry run proves
# the budget with scripts/gpu_budget.py). Steps, most valuable first, each under `timeout`
# until its cumulative deadline (time a step leaves unused goes to the next); a step waits
# for the builds it needs at most until its deadline and is skipped only when one of them
# failed:
#   1 env       nvidia-smi, python/torch/CuPy/JAX, nvcc, compute-sanitizer, ncu (versions only)
#   2 build     waits for the module and the torch op; the package view (setup.py's roots, symlinked);
#               the self-test, strict, and what it covered; the launch plans
#   3 tests     pytest of the GPU test files (tests/kernels but its CPU-only files,
#               tests/frameworks but test_jax*.py) -k "not compile", per-test timeout, no -x
#   4 jax       each tests/frameworks/test_jax*.py in its own pytest process (a crash of the
#               JAX CUDA handler loses nothing else)
#   5 routes    bench/bench_routes.py: every route (torch, the C++ torch op, the Python op's
#               glue, the JAX CUDA handler, CuPy) against the emulation's bits, and timed
#   6 sanitize  scripts/cuda_sanitize.sh: the memcheck canary and the 4 tools, all at once
#   7 bench     bench/bench_cuda.py --short (threads256 at [64,4,128,128] fp32 first; compile last)
#   8 gpu-tests the same files -k compile, and pytest -m gpu tests (the carried wheels first)
#   9 avatar    bench/bench_avatar.py, SD 1.5-size random networks, fp16, B = 1 4 8
#  10 extra     optional, on time left: ARCHS=80 build (PTX JIT on sm_90) running one call;
#               ncu SpeedOfLight of one launch at [64,4,128,128] float32
# SSD_TOOLKIT_CUDA_SELFTEST=strict throughout: a kernel that fails its self-test is an error,
# never hidden behind eager PyTorch. Exit status: 0 when steps 1-9 passed (10 is optional),
# 1 otherwise, 2 bad usage.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

# Budgets (s): the step names and shares of scripts/gpu_budget.json (docs/gpu.md, "Budget").
TOTAL_S=${SSD_GPU_CHECK_TOTAL_S:-560}  # the whole script: the device tool's 600 s, less 40 s
RESERVE_S=8                            # the last packing and the summary
TEST_TIMEOUT_S=60 # per test (pytest-timeout), torch.compile tests 150
ARCH=90           # the GPU machine's architecture (H100/H200): every build targets it alone

DRY=0 PREPARE=0 ONLY="" SKIP="" RESULTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --prepare) PREPARE=1; shift ;;
    --only) ONLY=",${2:?--only: expected step numbers like 1,2,3},"; shift 2 ;;
    --skip) SKIP=",${2:?--skip: expected step numbers like 7,8},"; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_check.sh: expected --dry-run, --prepare, --only N,N, --skip N,N or a results directory, got '$1'" >&2; exit 2 ;;
    *) [ -z "$RESULTS" ] || { echo "gpu_check.sh: expected one results directory, got '$RESULTS' and '$1'" >&2; exit 2; }
       RESULTS=$1; shift ;;
  esac
done
for list in "$ONLY" "$SKIP"; do
  [[ -z "$list" || "$list" =~ ^,(([1-9]|10),)+$ ]] || { echo "gpu_check.sh: --only/--skip: expected step numbers 1-10 separated by commas, got '${list:1:-1}'" >&2; exit 2; }
done
PY=${PYTHON:-$( [ "$DRY$PREPARE" != 00 ] && [ -x .venv/bin/python ] && echo "$ROOT/.venv/bin/python" || echo python3 )}
command -v "$PY" >/dev/null || { echo "gpu_check.sh: no Python interpreter '$PY' (set PYTHON)" >&2; exit 2; }
shares=$("$PY" scripts/gpu_budget.py --shares) || { echo "gpu_check.sh: scripts/gpu_budget.py --shares failed" >&2; exit 2; }
read -r -a STEPS <<<"$(tr ' ' '\n' <<<"$shares" | cut -d: -f1 | tr '\n' ' ')"
read -r -a BUDGET <<<"$(tr ' ' '\n' <<<"$shares" | cut -d: -f2 | tr '\n' ' ')"
NSTEPS=${#STEPS[@]}
EXTRA_MIN_S=${BUDGET[NSTEPS - 1]}  # the last step runs only with at least this much left
if [ -n "${SSD_GPU_CHECK_BUDGETS:-}" ]; then  # the shares of steps 1..NSTEPS-1 (the last gets the rest)
  IFS=, read -r -a BUDGET <<<"${SSD_GPU_CHECK_BUDGETS},0"
  [ "${#BUDGET[@]}" = "$NSTEPS" ] || { echo "gpu_check.sh: SSD_GPU_CHECK_BUDGETS: expected $((NSTEPS - 1)) comma-separated budgets, got '${SSD_GPU_CHECK_BUDGETS}'" >&2; exit 2; }
fi

if [ "$PREPARE" = 1 ]; then  # here, before the GPU run
  set -e
  bash scripts/fetch_gpu_wheels.sh
  dirty=$(git status --porcelain | wc -l)
  echo "$(git rev-parse --short HEAD)$([ "$dirty" -gt 0 ] && echo "+$dirty-uncommitted")" >.whl/commit.txt
  size=$( { git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | awk '/total$/ {s += $1} END {print s + 0}'; } )
  whl=$(du -cb .whl | awk '/total$/ {print $1}')
  echo "commit: $(cat .whl/commit.txt); tree that travels: $(( (size + whl) / 1048576 )) MiB of 64 (wheels $(( whl / 1048576 )) MiB)"
  [ $((size + whl)) -lt $((64 * 1048576)) ] || { echo "gpu_check.sh: the working tree plus .whl is over the device tool's 64 MiB" >&2; exit 1; }
  exec bash "$0" --dry-run
fi

RESULTS=${RESULTS:-${SSD_GPU_OUT:-${OUT:-runs/gpu_check}}}
if [ "$DRY" = 0 ]; then  # tools the image may keep off PATH (appended: PATH's own come first)
  for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer /opt/nvidia/nsight-compute/*; do
    [ -d "$d" ] && PATH="$PATH:$d"
  done
  export PATH
fi
mkdir -p "$RESULTS" || { echo "gpu_check.sh: cannot create the results directory '$RESULTS'" >&2; exit 2; }
RESULTS=$(cd "$RESULTS" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
SITE=${TMPDIR:-/tmp}/ssd_gpu_site  # the carried wheels (complete, or absent: installed beside, then renamed)
VIEW=$WORK/pkgview                 # the package as installed: setup.py's package_dir, symlinked
LOG=$RESULTS/gpu_check.log
: >"$LOG"
if ! git rev-parse --git-dir >/dev/null 2>&1 && [ -z "${SSD_GIT_COMMIT:-}" ] && [ -f .whl/commit.txt ]; then
  SSD_GIT_COMMIT=$(cat .whl/commit.txt)  # the device copy has no .git: --prepare wrote it
fi
export ROOT RESULTS WORK SITE VIEW PY DRY TEST_TIMEOUT_S SSD_GIT_COMMIT="${SSD_GIT_COMMIT:-}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
BASE_PYTHONPATH=${PYTHONPATH:-}
export BASE_PYTHONPATH

say() { echo "$*" | tee -a "$LOG"; }
key() { echo "$*" >"$WORK/key_$STEP"; }  # the step's key number for the summary
# PYTHONPATH: only what is complete (the package view once built, the wheels once installed).
pypath() {
  local p=""
  [ -d "$VIEW" ] && p=$VIEW
  [ -d "$SITE" ] && p=${p:+$p:}$SITE
  echo "${p}${BASE_PYTHONPATH:+${p:+:}$BASE_PYTHONPATH}"
}
export -f key pypath

# ------------------------------------------------------------------------------ helpers
# The package as `pip install .` lays it out (setup.py's PACKAGE_ROOTS: toy/ and integrations/
# under ssd_toolkit), as symlinks into the tree, with the built module; made beside, then
# renamed, so PYTHONPATH never holds half of it. Python runs with -P (no cwd first on sys.path).
VIEW_PY='import ast, os, sys
root, view = sys.argv[1:]
mapping = {"ssd_toolkit": "ssd_toolkit"}
for node in ast.parse(open(os.path.join(root, "setup.py")).read()).body:
    if isinstance(node, ast.Assign) and any(getattr(t, "id", "") in ("PACKAGE_ROOTS", "PACKAGE_DIR") for t in node.targets):
        try:  # the roots (package -> folder); sub-packages come along as linked folders
            mapping = ast.literal_eval(node.value)
            break
        except ValueError:
            continue
for package, folder in mapping.items():
    target = os.path.join(view, *package.split("."))
    os.makedirs(target, exist_ok=True)
    for entry in os.listdir(os.path.join(root, folder)):
        if entry == "__pycache__" or f"{package}.{entry}" in mapping or os.path.exists(os.path.join(target, entry)):
            continue
        os.symlink(os.path.join(root, folder, entry), os.path.join(target, entry))
print(f"package view: {len(mapping)} package roots from setup.py")'
make_view() {
  rm -rf "$VIEW.tmp" && "$PY" -c "$VIEW_PY" "$ROOT" "$VIEW.tmp" && rm -rf "$VIEW" && mv "$VIEW.tmp" "$VIEW"
}

ensure_wheels() {  # the carried wheels into $SITE, once (kept for --only reruns on a warm machine)
  [ -d "$SITE" ] && { echo "wheels already in $SITE"; return 0; }
  ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/ (run bash scripts/gpu_check.sh --prepare here and carry .whl)"; return 0; }
  rm -rf "$SITE.tmp"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE.tmp" .whl/*.whl &&
    mv "$SITE.tmp" "$SITE" && echo "installed into $SITE: $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')"
}

# The GPU test selection: every test file of tests/kernels but the CPU-only ones (so a new file
# there is picked up), and tests/frameworks but its JAX files, which step 4 runs one process each.
CPU_ONLY_TESTS=" test_cuda_emulation.py test_cuda_selftest.py test_barrier_mutants.py test_build.py test_gpu_check.py test_install_stamp.py test_kernel_cpu.py test_kernel_cpu_paths.py "
gpu_test_files() {
  local f
  for f in tests/kernels/test_*.py; do [[ "$CPU_ONLY_TESTS" == *" ${f##*/} "* ]] || echo "$f"; done
  for f in tests/frameworks/test_*.py; do [[ -f "$f" && "${f##*/}" != test_jax* ]] && echo "$f"; done
  return 0
}
jax_test_files() { local f; for f in tests/frameworks/test_jax*.py; do [ -f "$f" ] && echo "$f"; done; return 0; }

# The builds, each started at t = 0 in the background for sm_$ARCH alone, with its log,
# seconds and exit status in $WORK/build_<name>.{log,secs,rc}. Names as in scripts/gpu_budget.json.
BUILD_ENV="SSD_TOOLKIT_CUDA_ARCHS=$ARCH MAX_JOBS=\$(nproc) SSD_TOOLKIT_REQUIRE_BUILD=1"
build_command() {
  case "$1" in
    module) echo "$PY setup.py build_ext --inplace" ;;
    emulation) echo "PYTHONPATH=tests $PY -c 'import cuda_emulation_build as b; print(\"built\", b.module_path())'" ;;
    jax) echo "$PY -m ssd_toolkit.engine.jax_build" ;;
    torch_op) echo "$PY -m ssd_toolkit.engine.torch_op_build" ;;
    *) return 1 ;;
  esac
}
start_build() {
  local name=$1 cmd
  cmd=$(build_command "$name") || { echo "gpu_check.sh: no build command for '$name'" >&2; return 1; }
  (
    t0=$SECONDS
    eval "env $BUILD_ENV $cmd" >"$WORK/build_$name.log" 2>&1
    rc=$?
    echo $((SECONDS - t0)) >"$WORK/build_$name.secs"
    echo "$rc" >"$WORK/build_$name.rc"
  ) &
  : >"$WORK/build_$name.started"
}
# Waits for a build at most until the step's own deadline less 5 s: 0 built, 1 failed,
# 2 never started, 124 still running.
wait_build() {
  local name=$1 limit=$((STEP_TIMEOUT - SECONDS - 5))
  [ -f "$WORK/build_$name.started" ] || { echo "build $name: not started"; return 2; }
  while [ ! -f "$WORK/build_$name.rc" ] && [ "$SECONDS" -lt "$limit" ]; do sleep 1; done
  [ -f "$WORK/build_$name.rc" ] || { echo "build $name: still running after $SECONDS s of this step"; return 124; }
  local rc
  rc=$(cat "$WORK/build_$name.rc")
  echo "build $name: exit $rc in $(cat "$WORK/build_$name.secs") s"
  [ "$rc" = 0 ] || { tail -30 "$WORK/build_$name.log"; return 1; }
}
build_failed() { [ -f "$WORK/build_$1.rc" ] && [ "$(cat "$WORK/build_$1.rc")" != 0 ]; }
# The module built and in the package view (for a step after a step 2 that ran out of time
# while the build went on).
ready_module() {
  local msg
  msg=$(wait_build module) || { echo "$msg"; key "${msg%%$'\n'*}"; return 1; }
  ls "$VIEW"/ssd_toolkit/_C*.so >/dev/null 2>&1 || make_view
}
pytest_timeout_args() {  # per-test timeout where pytest-timeout is installed (the GPU image has it)
  "$PY" -c "import pytest_timeout" 2>/dev/null && echo "--timeout=$1" || true
}
pytest_summary() { grep -hE "^(=+ )?[0-9]+ (passed|failed|error|skipped|deselected).* in [0-9.]+s" "$1" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//'; }
export CPU_ONLY_TESTS VIEW_PY BUILD_ENV ARCH
export -f make_view ensure_wheels gpu_test_files jax_test_files pytest_timeout_args pytest_summary
export -f build_command start_build wait_build build_failed ready_module

# ------------------------------------------------------------------------------ steps
# Each step_* runs in its own bash under timeout; exit 0 PASS, 3 WARN, 4 SKIP, else FAIL.
# SSD_GPU_CHECK_FAKE_HANG=N (dry runs): step N hangs, to show what a hang leaves.
fake_hang() { [ "$DRY" = 1 ] && [ "${SSD_GPU_CHECK_FAKE_HANG:-}" = "$1" ] && { echo "fake hang in step $1"; sleep 100000; }; return 0; }
export -f fake_hang

ENV_PY='import sys, torch
versions = [f"python {sys.version.split()[0]}", f"torch {torch.__version__} (CUDA {torch.version.cuda})"]
for name in ("cupy", "jax", "numpy", "pytest_timeout"):  # the carried wheels: pinned in scripts/gpu_wheels.txt
    try:
        version = getattr(__import__(name), "__version__", "?")
    except Exception as exc:
        version = "- (" + type(exc).__name__ + ")"
    versions.append(name + " " + str(version))
print("; ".join(versions), file=sys.stderr)
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
export ENV_PY
step_env() {
  fake_hang 1
  if [ "$DRY" = 1 ]; then
    echo "bash $BASH_VERSION; $("$PY" --version); results in $RESULTS"
    "$PY" -c "import ast, sys; [ast.parse(s) for s in sys.argv[1:]]" "$ENV_PY" "$VIEW_PY" || return 1
    "$PY" scripts/gpu_check_wheels.py scripts/gpu_wheels.txt .whl $([ "${SSD_GPU_REQUIRE_WHEELS:-0}" = 1 ] || echo --allow-missing) || return 1
    key "python $("$PY" -c 'import platform; print(platform.python_version())'); wheel list checked"
    return 0
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu,compute_mode --format=csv || true
  local gpu
  gpu=$("$PY" -P -c "$ENV_PY")
  nvcc --version | tail -2; compute-sanitizer --version 2>/dev/null | head -2; ncu --version 2>/dev/null | tail -1
  echo "kernel $(uname -r); $(nproc) cores; commit ${SSD_GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  [ -n "$gpu" ] || { key "no CUDA device"; return 1; }
  key "$gpu, driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1), $(nvcc --version | grep -o 'release [0-9.]*')"
}

# The self-test, strict, on device 0, and what it covered: it must reach the 16-byte vector
# path, the split path and more than one pack per thread.
SELFTEST_PY='import sys, torch
from ssd_toolkit.engine import extension
from ssd_toolkit.frameworks.torch import selftest
selftest.run(extension.load(), torch.device("cuda", 0), strict=True)
torch.cuda.synchronize()
for e in selftest.covered():
    print("self-test %8s N=%-7d %-52s rel. error %.2e" % (e["dtype"], e["N"], e["plan"], e["error"]))
paths = selftest.covered_paths()
print("self-test covered: " + " ".join(paths))
missing = sorted({"vec=16B", "split", "packs>1"} - set(paths))
sys.exit(f"the self-test did not reach {missing} on this GPU" if missing else 0)'
export SELFTEST_PY

step_build() {
  fake_hang 2
  local name
  if [ "$DRY" = 1 ]; then
    "$PY" -c "import pybind11, setuptools" || { echo "no pybind11/setuptools for the build"; return 1; }
    grep -q SSD_TOOLKIT_REQUIRE_BUILD setup.py && grep -q SSD_TOOLKIT_CUDA_ARCHS setup.py || { echo "setup.py lost its build switches"; return 1; }
    "$PY" -c "import ast, sys; [ast.parse(s) for s in sys.argv[1:]]" "$SELFTEST_PY" || return 1
    # Every build the budget lists (its builder in the tree) is started, each for sm_$ARCH alone.
    for name in $("$PY" scripts/gpu_budget.py --builds); do
      echo "build $name at t = 0: env $BUILD_ENV $(build_command "$name")" || return 1
      build_command "$name" >/dev/null || { echo "the budget lists build '$name', which the check does not start"; return 1; }
    done
    if "$PY" -c "import jax" 2>/dev/null; then  # the JAX CUDA handler's nvcc line under the check's environment
      SSD_TOOLKIT_CUDA_ARCHS=$ARCH "$PY" -c "import sys
from ssd_toolkit.engine import jax_build
cmd = jax_build.cuda_command(jax_build.source_root(), 'x.so', 'nvcc')
gencode = [a for a in cmd if a.startswith('-gencode')]
print('JAX CUDA handler:', ' '.join(gencode))
sys.exit(0 if gencode and all(a.endswith(('sm_$ARCH', 'compute_$ARCH')) for a in gencode) else 'not for sm_$ARCH alone')" || return 1
    fi
    "$PY" scripts/gpu_budget.py 2>&1 | tee "$WORK/budget.txt"
    [ "${PIPESTATUS[0]}" = 0 ] || { key "the budget does not hold: $(grep -m1 '^gpu_budget: ' "$WORK/budget.txt" | cut -c13-)"; return 1; }
    make_view || { echo "the package view failed"; return 1; }
    PYTHONPATH=$(pypath) "$PY" -P -c "import ssd_toolkit, sys; p = ssd_toolkit.__file__; sys.exit(0 if p.startswith('$VIEW') else f'ssd_toolkit from {p}, not the package view')" ||
      { echo "importing ssd_toolkit from the package view failed"; return 1; }
    "$PY" bench/bench_cuda.py --help >/dev/null || { echo "bench_cuda.py --help failed"; return 1; }
    key "budget holds; every build for sm_$ARCH; package view imports; bench_cuda --plans parses"
    return 0
  fi
  local msg
  msg=$(wait_build module) || { echo "$msg"; key "${msg%%$'\n'*}"; return 1; }
  echo "$msg"
  tail -5 "$WORK/build_module.log"  # the whole log: details.tar.gz build_module.log
  local op="no C++ torch op in this tree"  # before the view, so steps 3 on all take the same torch route
  if [ -f "$WORK/build_torch_op.started" ]; then
    wait_build torch_op && op="C++ torch op built" || op="C++ torch op NOT built (log above; the Python op is used)"
  fi
  make_view || return 1
  PYTHONPATH=$(pypath) "$PY" -P -c "import ssd_toolkit, ssd_toolkit._C as m; print('backends:', ssd_toolkit.backends()); assert m.compiled_with_cuda(), 'no CUDA kernel'" ||
    { key "the module does not import from the package view, or has no CUDA kernel"; return 1; }
  PYTHONPATH=$(pypath) "$PY" -P -c "$SELFTEST_PY" 2>&1 | tee "$WORK/selftest.txt"
  local rc=${PIPESTATUS[0]}
  local covered
  covered=$(grep -o 'self-test covered: .*' "$WORK/selftest.txt" | tail -1)
  key "built in $(cat "$WORK/build_module.secs") s (from t=0); CUDA kernel in; $op; ${covered:-self-test FAILED: $(tail -1 "$WORK/selftest.txt")}"
  PYTHONPATH=$(pypath) "$PY" bench/bench_cuda.py --plans || rc=1
  return "$rc"
}

# pytest of the GPU test files, one line per test as it finishes (the log keeps them if the
# step is cut short), junit per step.
run_pytest() {  # name, timeout per test, pytest arguments...
  local name=$1 per_test=$2
  shift 2
  PYTHONPATH=$(pypath) "$PY" -P -m pytest -v -rs -p no:cacheprovider $(pytest_timeout_args "$per_test") \
    --junitxml="$WORK/junit_$name.xml" "$@" 2>&1 | tee "$WORK/pytest_$name.txt"
  return "${PIPESTATUS[0]}"
}
export -f run_pytest

step_tests() {
  fake_hang 3
  local files
  mapfile -t files < <(gpu_test_files)
  if [ "$DRY" = 1 ]; then
    PYTHONPATH=$(pypath) "$PY" -P -m pytest -q -p no:cacheprovider --collect-only -k "not compile" "${files[@]}" >"$WORK/collect3.txt" ||
      { cat "$WORK/collect3.txt"; return 1; }
    local n
    n=$(grep -c '::test_' "$WORK/collect3.txt")
    [ "$n" -gt 0 ] || { echo "-k 'not compile' selects no test"; return 1; }
    grep -q "test_cuda.py::test_gpu_agrees_with_the_cpu_emulation" "$WORK/collect3.txt" || { echo "the GPU/emulation parity test is not selected"; return 1; }
    key "$n tests selected in ${files[*]}"
    return 0
  fi
  ready_module || return 1
  wait_build emulation >/dev/null  # the GPU/emulation parity tests would build it themselves
  run_pytest tests "$TEST_TIMEOUT_S" -k "not compile" "${files[@]}"
  local rc=$?
  key "$(pytest_summary "$WORK/pytest_tests.txt")"
  [ "$rc" = 0 ] || return 1
  ! grep -q "needs a CUDA device" "$WORK/pytest_tests.txt" || return 3  # GPU tests skipped on a GPU machine
}

step_jax() {  # each JAX test file in its own process: a crash in the CUDA handler loses nothing else
  fake_hang 4
  local files f name rc=0 keys=()
  mapfile -t files < <(jax_test_files)
  [ "${#files[@]}" -gt 0 ] || { key "no tests/frameworks/test_jax*.py"; return 4; }
  if [ "$DRY" = 1 ]; then  # one collection here (cheap); the GPU run takes one process per file
    PYTHONPATH=$(pypath) "$PY" -P -m pytest -q -p no:cacheprovider --collect-only "${files[@]}" >"$WORK/collect4.txt" ||
      { cat "$WORK/collect4.txt"; return 1; }
    for f in "${files[@]}"; do keys+=("${f##*/} $(grep -c "^${f}::test_" "$WORK/collect4.txt")"); done
    key "tests selected, one process each on the GPU: ${keys[*]}"
    return 0
  fi
  local built=0
  wait_build jax && built=1
  make_view || return 1  # again: the JAX extension's files appear in the view
  for f in "${files[@]}"; do
    name=${f##*/}
    name=jax_${name%.py}
    run_pytest "$name" "$TEST_TIMEOUT_S" "$f" || rc=1
    keys+=("${f##*/}: $(pytest_summary "$WORK/pytest_$name.txt" || true)$(grep -q 'Fatal Python error\|core dumped\|Segmentation' "$WORK/pytest_$name.txt" && echo ' CRASHED')")
  done
  key "$([ $built = 1 ] || echo 'JAX extension NOT built; ')${keys[*]}"
  [ "$built" = 1 ] && [ "$rc" = 0 ] || return 1
  ! grep -q "needs a JAX GPU" "$WORK"/pytest_jax_*.txt || return 3  # GPU tests skipped on a GPU machine
}

step_routes() {  # every route on the GPU against the emulation's bits, and timed
  fake_hang 5
  if [ "$DRY" = 1 ]; then
    PYTHONPATH=$(pypath) "$PY" -P bench/bench_routes.py --dry-run || return 1
    key "routes, shapes and packages listed"
    return 0
  fi
  local name
  ready_module || return 1
  for name in emulation jax torch_op; do wait_build "$name"; done  # optional: a route without its build says so
  make_view || return 1
  PYTHONPATH=$(pypath) "$PY" -P bench/bench_routes.py --json "$WORK/routes.json" --markdown "$WORK/routes.md" 2>&1 | tee "$WORK/routes.txt"
  local rc=${PIPESTATUS[0]}
  key "$(grep -E '^routes: ' "$WORK/routes.txt" | tail -1 | sed 's/^routes: //' | grep . || tail -1 "$WORK/routes.txt")"
  return "$rc"
}

step_sanitize() {
  fake_hang 6
  if [ "$DRY" = 1 ]; then
    bash -n scripts/cuda_sanitize.sh || return 1
    local n
    n=$(PYTHONPATH=$(pypath) "$PY" scripts/sanitize_driver.py --list | head -1 | grep -oE '^[0-9]+') || return 1
    [ "$n" -ge 40 ] || { echo "expected >= 40 sanitizer cases, got $n"; return 1; }
    key "$n driver cases listed"
    return 0
  fi
  ready_module || return 1
  local per_tool=$((STEP_TIMEOUT - 15))  # all five at once: each may take the step, less the rerun and table
  PYTHONPATH=$(pypath) bash scripts/cuda_sanitize.sh --jobs 5 --canary --timeout $((per_tool > 15 ? per_tool : 15)) \
    --deadline $((STEP_TIMEOUT - 8)) --out "$WORK/sanitize"
  local rc=$?
  cp "$WORK/sanitize/sanitizer.md" "$WORK/sanitizer.md" 2>/dev/null
  key "$(awk -F'|' 'NR > 2 {gsub(/ /, "", $2); gsub(/ /, "", $3); printf "%s %s; ", $2, $3}' "$WORK/sanitizer.md" 2>/dev/null)"
  return $rc
}

step_bench() {
  fake_hang 7
  if [ "$DRY" = 1 ]; then
    "$PY" bench/bench_cuda.py --short --dry-run || return 1
    PYTHONPATH=$(pypath) "$PY" bench/bench_cuda.py --device cpu --shapes 2,4,8,8 3,1000 --forced-shape 2,4,8,8 --calls 2 --repeats 2 \
      --warmup 1 --copy-mib 1 --no-compile --l2-mib 0.05 --out-dir "$WORK/bench_smoke" >"$WORK/bench_smoke.txt" 2>&1 ||
      { cat "$WORK/bench_smoke.txt"; return 1; }
    key "rotation >= 2x L2 at every row; the script's rows, checks and files on the CPU kernel"
    return 0
  fi
  ready_module || return 1
  PYTHONPATH=$(pypath) "$PY" bench/bench_cuda.py --short --out-dir "$RESULTS" 2>&1 | tee "$WORK/bench.txt"
  local rc=${PIPESTATUS[0]}
  key "$(grep -E '^- (\[|variant)' "$WORK/bench.txt" | sed 's/^- //' | tr '\n' ';' | sed 's/(target[^)]*)//g')"
  return "$rc"
}

step_gpu_tests() {
  fake_hang 8
  local files
  mapfile -t files < <(gpu_test_files)
  if [ "$DRY" = 1 ]; then
    PYTHONPATH=$(pypath) "$PY" -P -m pytest -q -p no:cacheprovider --collect-only -k compile "${files[@]}" >"$WORK/collect6.txt" ||
      { cat "$WORK/collect6.txt"; return 1; }
    grep -E '::test_' "$WORK/collect6.txt" | grep -q cuda || { echo "-k compile selects no torch.compile GPU test"; return 1; }
    grep -qE '"gpu: ' pyproject.toml || { echo "the gpu marker is not registered in pyproject.toml"; return 1; }
    key "$(grep -c '::test_' "$WORK/collect6.txt") compile tests; gpu marker registered"
    return 0
  fi
  ready_module || return 1
  ensure_wheels
  run_pytest compile 150 -k compile "${files[@]}"
  local rc1=$?
  run_pytest gpu_marked "$TEST_TIMEOUT_S" -m gpu tests --continue-on-collection-errors --ignore-glob='*/test_jax*.py' 
  local rc2=$?
  key "compile: $(pytest_summary "$WORK/pytest_compile.txt"); -m gpu: $(pytest_summary "$WORK/pytest_gpu_marked.txt")"
  [ "$rc1" = 0 ] && [ "$rc2" = 0 ] || return 1
  ! grep -q "needs a CUDA device" "$WORK/pytest_compile.txt" "$WORK/pytest_gpu_marked.txt" || return 3  # skipped on a GPU machine
}

step_avatar() {
  fake_hang 9
  if [ "$DRY" = 1 ]; then
    PYTHONPATH=$(pypath) "$PY" bench/bench_avatar.py --dry-run --device cuda --batch 1 4 8 --steps 5 || return 1
    key "arguments parsed; SD 1.5-size guidance builds on the meta device"
    return 0
  fi
  ready_module || return 1
  ensure_wheels
  PYTHONPATH=$(pypath) "$PY" bench/bench_avatar.py --device cuda --batch 1 4 8 --steps 5 --warmup 2 --out-dir "$RESULTS" 2>&1 | tee "$WORK/avatar.txt"
  local rc=${PIPESTATUS[0]}
  key "$(grep -oE "'train_it_s': [0-9.]+" "$WORK/avatar.txt" | head -3 | awk '{printf "%s%.2f", NR > 1 ? ", " : "B=1,4,8 it/s ", $2}') (DreamWaltz ~8.3 it/s, RTX 3090, B=1)"
  return "$rc"
}

step_extra() {
  fake_hang 10
  local call="import torch, numpy as np, ssd_toolkit, sys
sys.path.insert(0, 'tests')
from tolerances import assert_close_to_reference
from ssd_toolkit.engine import extension as _extension
from ssd_toolkit.reference import estimate_reference
m = _extension.load()
print('module', m.__file__)
plan = m.cuda_launch_plan(4 * 64 * 64, 'float32', True)
print('plan on this GPU:', plan)
assert 'cluster=' not in plan or 'cluster=1 ' in plan, 'a PTX-JIT build must not launch clusters'
g = torch.Generator().manual_seed(0)
c, u, n = (torch.randn(8, 4 * 64 * 64, generator=g) for _ in range(3))
t = np.linspace(0, 999, 8)
E = ssd_toolkit.estimate(c.cuda(), u.cuda(), n.cuda(), t, 500.0)
torch.cuda.synchronize()
assert_close_to_reference(E, estimate_reference(c.numpy(), u.numpy(), n.numpy(), t, 500.0)[0], 'float32')
print('PTX-JIT call matches the reference')"
  local ncu_call="import torch, ssd_toolkit
x = [torch.randn(64, 4, 128, 128, device='cuda') for _ in range(3)]
t = torch.linspace(0, 999, 64, device='cuda', dtype=torch.float64)
for _ in range(3): ssd_toolkit.estimate(*x, t, 500.0)
torch.cuda.synchronize()"
  if [ "$DRY" = 1 ]; then
    "$PY" -c "import ast, sys; [ast.parse(s) for s in sys.argv[1:]]" "$call" "$ncu_call" || return 1
    key "ARCHS=80 and ncu snippets parse"
    return 0
  fi
  ready_module || return 1
  local out=() copy=$WORK/archs80
  mkdir -p "$copy/tests" && cp -r setup.py pyproject.toml README.md csrc ssd_toolkit "$copy/" &&
    cp tests/tolerances.py "$copy/tests/" && rm -f "$copy"/ssd_toolkit/_C*.so  # only what the build and call need
  if (cd "$copy" && SSD_TOOLKIT_CUDA_ARCHS=80 MAX_JOBS=16 SSD_TOOLKIT_REQUIRE_BUILD=1 "$PY" setup.py -q build_ext --inplace) &&
     (cd "$copy" && PYTHONPATH="$copy" timeout 60 "$PY" -c "$call"); then
    out+=("ARCHS=80 PTX JIT: ok")
  else
    out+=("ARCHS=80 PTX JIT: FAILED"); key "${out[*]}"; return 1
  fi
  local left=$((STEP_TIMEOUT - SECONDS))
  if [ "$left" -gt 25 ] && command -v ncu >/dev/null; then
    PYTHONPATH=$(pypath) timeout $((left - 5)) ncu --clock-control none --section SpeedOfLight --kernel-name-base demangled \
      --kernel-name regex:ssd --launch-skip 2 --launch-count 1 "$PY" -P -c "$ncu_call" 2>&1 | tee "$WORK/ncu.txt"
    out+=("ncu: $(grep -E "(Memory|DRAM) Throughput|Duration" "$WORK/ncu.txt" | awk '{print $1, $2, $NF}' | tr '\n' ' ')")
  else
    out+=("ncu: no time")
  fi
  key "${out[*]}"
}

export -f step_env step_build step_tests step_jax step_routes step_sanitize step_bench step_gpu_tests step_avatar step_extra

# ------------------------------------------------------------------------------ runner
START=$SECONDS
declare -a STATUS SECS KEYS
deadline=0
# The builds each step cannot run without (it waits for them, bounded, and is skipped only
# when one failed); every step but 1 needs a CUDA device (step 1).
declare -A NEEDS=([build]=module [tests]=module [jax]=jax [routes]=module [sanitize]=module [bench]=module
                  [gpu-tests]=module [avatar]=module [extra]=module)
export SSD_TOOLKIT_CUDA_SELFTEST=strict   # a kernel failing its self-test is an error, never eager ops
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX takes GPU memory as it needs it, not 75% at its first use

write_summary() {  # rewritten before and after every step: a run cut short keeps its table
  {
    echo "# gpu_check $([ "$DRY" = 1 ] && echo "(dry run) ")$(date -u '+%Y-%m-%d %H:%M:%S') UTC, commit ${SSD_GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
    echo
    [ -f "$WORK/selftest.txt" ] && { echo "## first-use self-test (strict)"; echo; sed 's/^/    /' "$WORK/selftest.txt"; echo; }
    [ -f "$WORK/routes.md" ] && { echo "## routes"; echo; cat "$WORK/routes.md"; echo; }
    [ -f "$WORK/sanitizer.md" ] && { echo "## compute-sanitizer"; echo; cat "$WORK/sanitizer.md"; echo; }
    echo "## Steps ($((SECONDS - START)) s of $TOTAL_S$([ -n "${1:-}" ] && echo "; $1"))"
    echo
    echo "| # | step | status | s | budget | key |"
    echo "|---|---|---|---|---|---|"
    local i n
    for i in "${!STEPS[@]}"; do
      n=$((i + 1))
      echo "| $n | ${STEPS[$i]} | ${STATUS[n]:-PENDING} | ${SECS[n]:-0} | $([ "$n" = "$NSTEPS" ] && echo rest || echo "${BUDGET[$i]}") | ${KEYS[n]:-} |"
    done
  } >"$RESULTS/summary.md.tmp" && mv "$RESULTS/summary.md.tmp" "$RESULTS/summary.md"
}

pack_details() {  # every finished step's files, re-packed after each step
  cp "$RESULTS/summary.md" "$WORK/" 2>/dev/null
  tar -C "$WORK" --exclude=./archs80 --exclude=./pkgview --exclude=./pkgview.tmp -czf "$RESULTS/details.tar.gz.tmp" . 2>/dev/null &&
    mv "$RESULTS/details.tar.gz.tmp" "$RESULTS/details.tar.gz"
}

# t = 0: every build of the budget whose builder is in the tree, in the background, for
# sm_$ARCH alone (a machine without a GPU never rebuilds the checkout: the dry run builds nothing).
selected() { { [ -z "$ONLY" ] || [[ "$ONLY" == *",$1,"* ]]; } && [[ "$SKIP" != *",$1,"* ]]; }
if [ "$DRY" = 0 ] && { selected 2 || [ ! -f "$(ls ssd_toolkit/_C*.so 2>/dev/null | head -1)" ]; }; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    for name in $("$PY" scripts/gpu_budget.py --builds); do
      start_build "$name"
      echo "build $name started at t = 0: env $BUILD_ENV $(build_command "$name")" >>"$LOG"
    done
  else
    echo "step 2 builds only where a CUDA device is (use --dry-run here)" | tee -a "$LOG"
  fi
elif [ "$DRY" = 0 ]; then
  make_view  # a rerun without step 2 (--only 3,5 on a warm machine): the builds made before
  for name in $("$PY" scripts/gpu_budget.py --builds); do echo 0 >"$WORK/build_$name.rc"; echo 0 >"$WORK/build_$name.secs"; : >"$WORK/build_$name.started"; done
fi

say "gpu_check $([ "$DRY" = 1 ] && echo "DRY RUN ")$(date -u '+%Y-%m-%d %H:%M:%S') UTC; results in $RESULTS; python $PY; budgets ${BUDGET[*]:0:$((NSTEPS - 1))} of $TOTAL_S s"
write_summary "starting"
for i in "${!STEPS[@]}"; do
  n=$((i + 1)) STEP=${STEPS[$i]}
  export STEP
  if [ "$n" -lt "$NSTEPS" ]; then deadline=$((deadline + BUDGET[i])); else deadline=$((TOTAL_S - RESERVE_S)); fi
  [ "$deadline" -le $((TOTAL_S - RESERVE_S)) ] || deadline=$((TOTAL_S - RESERVE_S))
  left=$((START + deadline - SECONDS))
  if ! selected "$n"; then
    STATUS[n]=SKIP KEYS[n]="not selected"; SECS[n]=0; continue
  fi
  if [ "$DRY" = 0 ] && [ -n "${NEEDS[$STEP]:-}" ] && build_failed "${NEEDS[$STEP]}"; then
    STATUS[n]=SKIP KEYS[n]="needs the ${NEEDS[$STEP]} build, which failed (details.tar.gz build_${NEEDS[$STEP]}.log)"; SECS[n]=0
    say "===== step $n/$NSTEPS: $STEP SKIP: the ${NEEDS[$STEP]} build failed; its log ends:"
    tail -15 "$WORK/build_${NEEDS[$STEP]}.log" | tee -a "$LOG"
    continue
  fi
  if [ "$DRY" = 0 ] && [ "${STATUS[1]:-}" = FAIL ]; then
    STATUS[n]=SKIP KEYS[n]="needs step 1 (a CUDA device)"; SECS[n]=0; continue
  fi
  min=$([ "$n" = "$NSTEPS" ] && echo "$EXTRA_MIN_S" || echo 5)
  if [ "$left" -lt "$min" ]; then
    STATUS[n]=SKIP KEYS[n]="no time left (${left} s)"; SECS[n]=0; continue
  fi
  say ""
  say "===== step $n/$NSTEPS: $STEP (timeout ${left} s, $((SECONDS - START)) s elapsed)"
  STATUS[n]=RUNNING KEYS[n]="started at $((SECONDS - START)) s, deadline $deadline s"
  write_summary "step $n running"
  t0=$SECONDS
  STEP_TIMEOUT=$left timeout --kill-after=5 "$left" bash -c "step_${STEP//-/_}" 2>&1 | tee -a "$LOG" >"$WORK/step${n}_$STEP.log"
  rc=${PIPESTATUS[0]}
  SECS[n]=$((SECONDS - t0))
  case "$rc" in
    0) STATUS[n]=PASS ;; 3) STATUS[n]=WARN ;; 4) STATUS[n]=SKIP ;; 124|137) STATUS[n]=TIMEOUT ;; *) STATUS[n]=FAIL ;;
  esac
  KEYS[n]=$(cat "$WORK/key_$STEP" 2>/dev/null || echo "exit $rc")
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && KEYS[n]="killed at ${left} s; ${KEYS[n]}"
  say "===== step $n/$NSTEPS: $STEP ${STATUS[n]} in ${SECS[n]} s: ${KEYS[n]}"
  write_summary "after step $n"
  pack_details
done

# ------------------------------------------------------------------------------ summary

write_summary "done"
pack_details
nfiles=$(find "$RESULTS" -type f | wc -l)
[ "$nfiles" -le 8 ] || say "WARNING: $RESULTS holds $nfiles files; the device tool returns 8"
rm -rf "$WORK"
say ""
tee -a "$LOG" <"$RESULTS/summary.md"
failed=0
for n in $(seq 1 $((NSTEPS - 1))); do
  case "${STATUS[n]:-SKIP}" in PASS|WARN) ;; SKIP) [[ -n "$ONLY$SKIP" ]] || failed=1 ;; *) failed=1 ;; esac
done
verdict=$([ -n "$ONLY$SKIP" ] && echo "the selected steps passed" || echo "steps 1-$((NSTEPS - 1)) passed")
echo "gpu_check: $([ $failed = 0 ] && echo "$verdict" || echo "FAILED (see the table)"); results in $RESULTS ($(ls "$RESULTS" | tr '\n' ' '))"
exit $failed
