#!/usr/bin/env bash
# GPU verification in one command, within 540 s on an H100 (issue 16; docs/gpu.md):
#   bash scripts/gpu_check.sh [RESULTS_DIR]          # on the GPU machine
#   bash scripts/gpu_check.sh --dry-run [RESULTS_DIR] # anywhere: every part that needs no GPU
#   bash scripts/gpu_check.sh --prepare              # here, before a GPU run: wheels, commit, size
#   options: --only N,N  --skip N,N  (step numbers)
# RESULTS_DIR: the argument, else $SSD_GPU_OUT, else $OUT (the device tool's), else
# runs/gpu_check. It receives at most 7 files (the device tool returns 8): gpu_check.log
# (everything), summary.md (the tables), details.tar.gz (each step's log, junit XML,
# sanitizer logs, ncu report), cuda_<gpu>.{json,md}, avatar_<gpu>.{json,md}.
# Steps, most valuable first; each runs under `timeout` until its cumulative deadline (time
# a step leaves unused goes to the next), the summary table is printed last:
#   1 env       nvidia-smi, torch, nvcc, compute-sanitizer, ncu; installs .whl/*.whl to $SITE
#   2 build     editable install, SSD_TOOLKIT_CUDA_ARCHS=90 MAX_JOBS=16 SSD_TOOLKIT_REQUIRE_BUILD=1,
#               no build isolation, no index, no deps; the launch plans of the benchmark shapes
#   3 tests     pytest -x tests/kernels/test_cuda.py -k "not compile"
#   4 sanitize  scripts/cuda_sanitize.sh: the memcheck canary and the 4 tools, all at once
#   5 bench     bench/bench_cuda.py --short (forced no_cluster / split at [64,4,128,128])
#   6 gpu-tests pytest tests/kernels/test_cuda.py -k compile; pytest -m gpu tests
#   7 avatar    bench/bench_avatar.py, SD 1.5-size random networks, fp16, B = 1 4 8
#   8 extra     optional, on time left: ARCHS=80 build (PTX JIT on sm_90) running one call;
#               ncu SpeedOfLight of one launch at [64,4,128,128] float32
# Exit status: 0 when steps 1-7 passed (8 is optional), 1 otherwise, 2 bad usage.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

TOTAL_S=540       # the whole script, on an H100 with a fresh build
RESERVE_S=12      # packing and the summary at the end
STEPS=(env build tests sanitize bench gpu-tests avatar extra)
BUDGET=(15 75 100 100 70 70 90 0)  # step 8 gets what is left before TOTAL_S - RESERVE_S
EXTRA_MIN_S=45    # step 8 runs only with at least this much left

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
  [[ -z "$list" || "$list" =~ ^,([1-8],)+$ ]] || { echo "gpu_check.sh: --only/--skip: expected step numbers 1-8 separated by commas, got '${list:1:-1}'" >&2; exit 2; }
done
PY=${PYTHON:-$( [ "$DRY$PREPARE" != 00 ] && [ -x .venv/bin/python ] && echo "$ROOT/.venv/bin/python" || echo python3 )}
command -v "$PY" >/dev/null || { echo "gpu_check.sh: no Python interpreter '$PY' (set PYTHON)" >&2; exit 2; }

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
SITE=${TMPDIR:-/tmp}/ssd_gpu_site  # the carried wheels, installed by step 1 (kept for --only reruns)
LOG=$RESULTS/gpu_check.log
: >"$LOG"
if ! git rev-parse --git-dir >/dev/null 2>&1 && [ -z "${SSD_GIT_COMMIT:-}" ] && [ -f .whl/commit.txt ]; then
  SSD_GIT_COMMIT=$(cat .whl/commit.txt)  # the device copy has no .git: --prepare wrote it
fi
export ROOT RESULTS WORK SITE PY DRY SSD_GIT_COMMIT="${SSD_GIT_COMMIT:-}"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

say() { echo "$*" | tee -a "$LOG"; }
key() { echo "$*" >"$WORK/key_$STEP"; }  # the step's key number for the summary
export -f key

# ------------------------------------------------------------------------------ steps
# Each step_* runs in its own bash under timeout; exit 0 PASS, 3 WARN, 4 SKIP, else FAIL.
step_env() {
  if [ "$DRY" = 1 ]; then
    echo "bash $BASH_VERSION; $("$PY" --version); results in $RESULTS"
    "$PY" scripts/gpu_check_wheels.py scripts/gpu_wheels.txt .whl $([ "${SSD_GPU_REQUIRE_WHEELS:-0}" = 1 ] || echo --allow-missing) || return 1
    key "python $("$PY" -c 'import platform; print(platform.python_version())'); wheel list checked"
    return 0
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu,compute_mode --format=csv || true
  nvidia-smi || true
  "$PY" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'CUDA', torch.version.cuda, 'available', torch.cuda.is_available())"
  nvcc --version | tail -2; compute-sanitizer --version | head -2; ncu --version | tail -1
  uname -r; nproc; "$PY" -m pip list 2>/dev/null | grep -iE "^(numpy|cupy|pybind11|ninja|pytest|hypothesis|transformers|huggingface.hub|setuptools|triton) " || true
  echo "commit: ${SSD_GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || return 1
    echo "installed into $SITE: $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')"
  else
    echo "no .whl/ (run bash scripts/gpu_check.sh --prepare here and carry .whl): steps 6-7 lack diffusers/smplx"
  fi
  local gpu
  gpu=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))") || { key "no CUDA device"; return 1; }
  key "$gpu, driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1), $(nvcc --version | grep -o 'release [0-9.]*')"
}

step_build() {
  if [ "$DRY" = 1 ]; then
    "$PY" -c "import pybind11, setuptools" || return 1
    grep -q SSD_TOOLKIT_REQUIRE_BUILD setup.py && grep -q SSD_TOOLKIT_CUDA_ARCHS setup.py || { echo "setup.py lost its build switches"; return 1; }
    "$PY" bench/bench_cuda.py --help >/dev/null || return 1
    key "build switches present; bench_cuda --plans parses"
    return 0
  fi
  # Never rebuild a checkout's module on a machine without a GPU (e.g. a run with --skip 1 here).
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'step 2 builds only where a CUDA device is (use --dry-run here)')" || return 1
  local start=$SECONDS
  SSD_TOOLKIT_CUDA_ARCHS=90 MAX_JOBS=16 SSD_TOOLKIT_REQUIRE_BUILD=1 \
    "$PY" -m pip install --no-build-isolation --no-index --no-deps -e . || {
      echo "editable install failed; building in place instead (the package is then found through PYTHONPATH)"
      SSD_TOOLKIT_CUDA_ARCHS=90 MAX_JOBS=16 SSD_TOOLKIT_REQUIRE_BUILD=1 "$PY" setup.py build_ext --inplace || return 1
    }
  "$PY" -c "import ssd_toolkit, ssd_toolkit._C as m; print('backends:', ssd_toolkit.backends()); assert m.compiled_with_cuda(), 'no CUDA kernel'" || return 1
  "$PY" bench/bench_cuda.py --plans || return 1
  key "built in $((SECONDS - start)) s; CUDA kernel in"
}

pytest_summary() { grep -hE "^(=+ )?[0-9]+ (passed|failed|error|skipped|deselected).* in [0-9.]+s" "$1" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//'; }
export -f pytest_summary

collect_test_cuda() {  # dry runs: the test ids of tests/kernels/test_cuda.py, collected once
  [ -s "$WORK/collect.txt" ] || "$PY" -m pytest -q -p no:cacheprovider --collect-only tests/kernels/test_cuda.py >"$WORK/collect.txt" ||
    { cat "$WORK/collect.txt"; return 1; }
}
export -f collect_test_cuda

step_tests() {
  local sel=(tests/kernels/test_cuda.py -k "not compile")
  if [ "$DRY" = 1 ]; then
    collect_test_cuda || return 1
    local n
    n=$(grep -E '::test_' "$WORK/collect.txt" | grep -vc compile)
    [ "$n" -gt 0 ] || { echo "-k 'not compile' selects no test"; return 1; }
    key "$n tests selected"
    return 0
  fi
  "$PY" -m pytest -x -q -rs -p no:cacheprovider "${sel[@]}" --junitxml="$WORK/junit_tests.xml" 2>&1 | tee "$WORK/pytest3.txt"
  local rc=${PIPESTATUS[0]}
  key "$(pytest_summary "$WORK/pytest3.txt")"
  [ "$rc" = 0 ] || return 1
  ! grep -q "needs a CUDA device" "$WORK/pytest3.txt" || return 3  # GPU tests skipped on a GPU machine
}

step_sanitize() {
  if [ "$DRY" = 1 ]; then
    bash -n scripts/cuda_sanitize.sh || return 1
    local n
    n=$("$PY" scripts/sanitize_driver.py --list | head -1 | grep -oE '^[0-9]+') || return 1
    [ "$n" -ge 40 ] || { echo "expected >= 40 sanitizer cases, got $n"; return 1; }
    key "$n driver cases listed"
    return 0
  fi
  local per_tool=$((STEP_TIMEOUT - 20))  # all five at once: each may take the whole step
  bash scripts/cuda_sanitize.sh --jobs 5 --canary --timeout $((per_tool > 15 ? per_tool : 15)) --out "$WORK/sanitize"
  local rc=$?
  cp "$WORK/sanitize/sanitizer.md" "$WORK/sanitizer.md" 2>/dev/null
  key "$(awk -F'|' 'NR > 2 {gsub(/ /, "", $2); gsub(/ /, "", $3); printf "%s %s; ", $2, $3}' "$WORK/sanitizer.md" 2>/dev/null)"
  return $rc
}

step_bench() {
  if [ "$DRY" = 1 ]; then
    "$PY" bench/bench_cuda.py --short --dry-run || return 1
    "$PY" bench/bench_cuda.py --device cpu --shapes 2,4,8,8 3,1000 --forced-shape 2,4,8,8 --calls 2 --repeats 2 \
      --warmup 1 --copy-mib 1 --no-compile --l2-mib 0.05 --out-dir "$WORK/bench_smoke" >"$WORK/bench_smoke.txt" 2>&1 ||
      { cat "$WORK/bench_smoke.txt"; return 1; }
    key "rotation >= 2x L2 at every row; the script's rows, checks and files on the CPU kernel"
    return 0
  fi
  "$PY" bench/bench_cuda.py --short --out-dir "$RESULTS" 2>&1 | tee "$WORK/bench.txt"
  local rc=${PIPESTATUS[0]}
  key "$(grep -E '^- \[' "$WORK/bench.txt" | sed 's/^- //' | tr '\n' ';' | sed 's/(target[^)]*)//g')"
  return "$rc"
}

step_gpu_tests() {
  if [ "$DRY" = 1 ]; then
    collect_test_cuda || return 1
    grep -E '::test_' "$WORK/collect.txt" | grep compile | grep -q cuda || { echo "-k compile selects no torch.compile GPU test"; return 1; }
    grep -qE '"gpu: ' pyproject.toml || { echo "the gpu marker is not registered in pyproject.toml"; return 1; }
    key "$(grep -E '::test_' "$WORK/collect.txt" | grep -c compile) compile tests; gpu marker registered"
    return 0
  fi
  "$PY" -m pytest -q -rs -p no:cacheprovider tests/kernels/test_cuda.py -k compile --junitxml="$WORK/junit_compile.xml" 2>&1 | tee "$WORK/pytest6a.txt"
  local rc1=${PIPESTATUS[0]}
  "$PY" -m pytest -q -rs -p no:cacheprovider -m gpu tests --continue-on-collection-errors --junitxml="$WORK/junit_gpu.xml" 2>&1 | tee "$WORK/pytest6b.txt"
  local rc2=${PIPESTATUS[0]}
  key "compile: $(pytest_summary "$WORK/pytest6a.txt"); -m gpu: $(pytest_summary "$WORK/pytest6b.txt")"
  [ "$rc1" = 0 ] && [ "$rc2" = 0 ] || return 1
  ! grep -q "needs a CUDA device" "$WORK/pytest6a.txt" "$WORK/pytest6b.txt" || return 3  # skipped on a GPU machine
}

step_avatar() {
  if [ "$DRY" = 1 ]; then
    "$PY" bench/bench_avatar.py --dry-run --device cuda --batch 1 4 8 --steps 5 || return 1
    key "arguments parsed; SD 1.5-size guidance builds on the meta device"
    return 0
  fi
  "$PY" bench/bench_avatar.py --device cuda --batch 1 4 8 --steps 5 --warmup 2 --out-dir "$RESULTS" 2>&1 | tee "$WORK/avatar.txt"
  local rc=${PIPESTATUS[0]}
  key "$(grep -oE "'train_it_s': [0-9.]+" "$WORK/avatar.txt" | head -3 | awk '{printf "%s%.2f", NR > 1 ? ", " : "B=1,4,8 it/s ", $2}') (DreamWaltz ~8.3 it/s, RTX 3090, B=1)"
  return "$rc"
}

step_extra() {
  local call="import torch, numpy as np, ssd_toolkit, sys
sys.path.insert(0, 'tests')
from tolerances import assert_close_to_reference
from ssd_toolkit import _extension
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
  local out=() copy=$WORK/archs80
  mkdir -p "$copy/tests" && cp -r setup.py pyproject.toml README.md csrc ssd_toolkit "$copy/" &&
    cp tests/tolerances.py "$copy/tests/" && rm -f "$copy"/ssd_toolkit/_C*.so  # only what the build and call need
  if (cd "$copy" && SSD_TOOLKIT_CUDA_ARCHS=80 MAX_JOBS=16 SSD_TOOLKIT_REQUIRE_BUILD=1 "$PY" setup.py -q build_ext --inplace) &&
     (cd "$copy" && PYTHONPATH="$copy:$SITE" timeout 60 "$PY" -c "$call"); then
    out+=("ARCHS=80 PTX JIT: ok")
  else
    out+=("ARCHS=80 PTX JIT: FAILED"); key "${out[*]}"; return 1
  fi
  local left=$((STEP_TIMEOUT - SECONDS))
  if [ "$left" -gt 25 ] && command -v ncu >/dev/null; then
    timeout $((left - 5)) ncu --clock-control none --section SpeedOfLight --kernel-name-base demangled \
      --kernel-name regex:ssd --launch-skip 2 --launch-count 1 "$PY" -c "$ncu_call" 2>&1 | tee "$WORK/ncu.txt"
    out+=("ncu: $(grep -E "(Memory|DRAM) Throughput|Duration" "$WORK/ncu.txt" | awk '{print $1, $2, $NF}' | tr '\n' ' ')")
  else
    out+=("ncu: no time")
  fi
  key "${out[*]}"
}

export -f step_env step_build step_tests step_sanitize step_bench step_gpu_tests step_avatar step_extra

# ------------------------------------------------------------------------------ runner
START=$SECONDS
declare -a STATUS SECS KEYS
deadline=0
needs_build=" 3 4 5 6 8 "
say "gpu_check $([ "$DRY" = 1 ] && echo "DRY RUN ")$(date -u '+%Y-%m-%d %H:%M:%S') UTC; results in $RESULTS; python $PY"
for i in "${!STEPS[@]}"; do
  n=$((i + 1)) STEP=${STEPS[$i]}
  export STEP
  if [ "$n" -lt 8 ]; then deadline=$((deadline + BUDGET[i])); else deadline=$((TOTAL_S - RESERVE_S)); fi
  left=$((START + deadline - SECONDS))
  if { [ -n "$ONLY" ] && [[ "$ONLY" != *",$n,"* ]]; } || [[ "$SKIP" == *",$n,"* ]]; then
    STATUS[n]=SKIP KEYS[n]="not selected"; SECS[n]=0; continue
  fi
  if [ "$DRY" = 0 ] && [[ "$needs_build" == *" $n "* ]] && [[ " FAIL TIMEOUT " == *" ${STATUS[2]:-none} "* ]]; then
    STATUS[n]=SKIP KEYS[n]="needs step 2 (build)"; SECS[n]=0; continue  # not run (--only/--skip): an earlier build
  fi
  if [ "$DRY" = 0 ] && [ "${STATUS[1]:-}" = FAIL ]; then
    STATUS[n]=SKIP KEYS[n]="needs step 1 (a CUDA device)"; SECS[n]=0; continue
  fi
  min=$([ "$n" = 8 ] && echo "$EXTRA_MIN_S" || echo 5)
  if [ "$left" -lt "$min" ]; then
    STATUS[n]=SKIP KEYS[n]="no time left (${left} s)"; SECS[n]=0; continue
  fi
  say ""
  say "===== step $n/8: $STEP (timeout ${left} s, $((SECONDS - START)) s elapsed)"
  t0=$SECONDS
  STEP_TIMEOUT=$left timeout --kill-after=10 "$left" bash -c "step_${STEP//-/_}" 2>&1 | tee -a "$LOG" >"$WORK/step${n}_$STEP.log"
  rc=${PIPESTATUS[0]}
  SECS[n]=$((SECONDS - t0))
  case "$rc" in
    0) STATUS[n]=PASS ;; 3) STATUS[n]=WARN ;; 4) STATUS[n]=SKIP ;; 124|137) STATUS[n]=TIMEOUT ;; *) STATUS[n]=FAIL ;;
  esac
  KEYS[n]=$(cat "$WORK/key_$STEP" 2>/dev/null || echo "exit $rc")
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && KEYS[n]="killed at ${left} s; ${KEYS[n]}"
  say "===== step $n/8: $STEP ${STATUS[n]} in ${SECS[n]} s: ${KEYS[n]}"
done

# ------------------------------------------------------------------------------ summary
{
  echo "# gpu_check $([ "$DRY" = 1 ] && echo "(dry run) ")$(date -u '+%Y-%m-%d %H:%M:%S') UTC, commit ${SSD_GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  echo
  [ -f "$WORK/sanitizer.md" ] && { echo "## compute-sanitizer"; echo; cat "$WORK/sanitizer.md"; echo; }
  echo "## Steps ($((SECONDS - START)) s of $TOTAL_S)"
  echo
  echo "| # | step | status | s | budget | key |"
  echo "|---|---|---|---|---|---|"
  for i in "${!STEPS[@]}"; do
    n=$((i + 1))
    echo "| $n | ${STEPS[$i]} | ${STATUS[n]:-SKIP} | ${SECS[n]:-0} | $([ "$n" = 8 ] && echo rest || echo "${BUDGET[$i]}") | ${KEYS[n]:-} |"
  done
} >"$RESULTS/summary.md"
cp "$RESULTS/summary.md" "$WORK/"
tar -C "$WORK" --exclude=./archs80 -czf "$RESULTS/details.tar.gz" . 2>/dev/null
nfiles=$(find "$RESULTS" -type f | wc -l)
[ "$nfiles" -le 8 ] || say "WARNING: $RESULTS holds $nfiles files; the device tool returns 8"
rm -rf "$WORK"
say ""
cat "$RESULTS/summary.md" | tee -a "$LOG"
failed=0
for n in 1 2 3 4 5 6 7; do
  case "${STATUS[n]:-SKIP}" in PASS|WARN) ;; SKIP) [[ -n "$ONLY$SKIP" ]] || failed=1 ;; *) failed=1 ;; esac
done
verdict=$([ -n "$ONLY$SKIP" ] && echo "the selected steps passed" || echo "steps 1-7 passed")
echo "gpu_check: $([ $failed = 0 ] && echo "$verdict" || echo "FAILED (see the table)"); results in $RESULTS ($(ls "$RESULTS" | tr '\n' ' '))"
exit $failed
