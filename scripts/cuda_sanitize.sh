#!/usr/bin/env bash
# compute-sanitizer over every CUDA kernel variant and edge case (needs a GPU; run from anywhere):
#   bash scripts/cuda_sanitize.sh                      # memcheck racecheck synccheck initcheck
#   bash scripts/cuda_sanitize.sh memcheck racecheck   # some tools
#   bash scripts/cuda_sanitize.sh --jobs 4 --canary --out DIR
# Runs scripts/sanitize_driver.py (54 calls: every dtype, resident cluster size, packs per
# thread, access width, split chunking, forced path and edge case, each compared with the
# reference) under each tool, instrumenting only our kernels (--kernel-name kns=$SSD_SANITIZE_KERNELS,
# default "ssd", the kernels' namespace). torch's caching allocator is off, so each tensor is
# its own allocation and an access past an array is outside it.
#   --out DIR    logs (sanitize_<tool>.log) and the summary table sanitizer.md (default runs/sanitize)
#   --jobs N     tools run N at a time (default 1)
#   --timeout S  seconds per tool (default 600)
#   --deadline S seconds for the whole script (default: none): a tool rerun alone gets only
#                what is left before it (less 5 s), none when under 10 s are left
#   --canary     also one deliberate out-of-bounds launch under memcheck, which must be
#                reported: proof that the kernel filter matches our kernels
# SSD_SANITIZE_DRIVER_ARGS adds driver arguments (e.g. "--only f32-"; "--device cpu" runs
# the driver on the CPU and skips the GPU check: tests/kernels/test_gpu_check.py does that with a
# stand-in compute-sanitizer to test this script).
# sanitizer.md is written after the tools ran, after each rerun and on any exit (a TERM from
# an outer timeout included), so a run cut short keeps its table; a tool without a result is
# NOT-FINISHED. SSD_TOOLKIT_CUDA_SELFTEST=0: the driver compares every launch with the
# reference itself, and no launch can fall back to eager PyTorch.
# Exit status: 0 every tool clean (and the canary caught), 1 otherwise, 2 bad usage / no GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUTDIR=runs/sanitize JOBS=1 TIMEOUT=600 DEADLINE=0 CANARY=0 TOOLS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUTDIR=${2:?--out: expected a directory}; shift 2 ;;
    --jobs) JOBS=${2:?--jobs: expected a number}; shift 2 ;;
    --timeout) TIMEOUT=${2:?--timeout: expected seconds}; shift 2 ;;
    --deadline) DEADLINE=${2:?--deadline: expected seconds}; shift 2 ;;
    --canary) CANARY=1; shift ;;
    memcheck|racecheck|synccheck|initcheck) TOOLS+=("$1"); shift ;;
    *) echo "cuda_sanitize.sh: expected memcheck, racecheck, synccheck, initcheck, --out DIR, --jobs N, --timeout S, --deadline S or --canary, got '$1'" >&2; exit 2 ;;
  esac
done
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "cuda_sanitize.sh: --jobs: expected a positive integer, got '$JOBS'" >&2; exit 2; }
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || { echo "cuda_sanitize.sh: --timeout: expected seconds, got '$TIMEOUT'" >&2; exit 2; }
[[ "$DEADLINE" =~ ^[0-9]+$ ]] || { echo "cuda_sanitize.sh: --deadline: expected seconds, got '$DEADLINE'" >&2; exit 2; }
[ ${#TOOLS[@]} -gt 0 ] || TOOLS=(memcheck racecheck synccheck initcheck)
command -v compute-sanitizer >/dev/null || { echo "cuda_sanitize.sh: compute-sanitizer not on PATH (CUDA toolkit bin/)" >&2; exit 2; }
read -r -a DRIVER_ARGS <<<"${SSD_SANITIZE_DRIVER_ARGS:-}"
if [[ " ${DRIVER_ARGS[*]} " != *" --device cpu "* ]]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'cuda_sanitize.sh: no CUDA device')" || exit 2
fi
mkdir -p "$OUTDIR"
export PYTORCH_NO_CUDA_MEMORY_CACHING=1 PYTHONUNBUFFERED=1 SSD_TOOLKIT_CUDA_SELFTEST=0
FILTER=(--kernel-name "kns=${SSD_SANITIZE_KERNELS:-ssd}")

tool_flags() {
  case "$1" in
    memcheck) echo "--leak-check no" ;;
    racecheck) echo "--racecheck-report all" ;;
    *) echo "" ;;
  esac
}

run_tool() {  # tool log [driver args...]; SECS_LIMIT overrides --timeout
  local tool=$1 log=$2; shift 2
  local start=$SECONDS
  # shellcheck disable=SC2046
  timeout --kill-after=5 "${SECS_LIMIT:-$TIMEOUT}" compute-sanitizer --tool "$tool" $(tool_flags "$tool") "${FILTER[@]}" \
    --error-exitcode 99 --print-limit 20 "$PY" scripts/sanitize_driver.py "${DRIVER_ARGS[@]}" "$@" >"$log" 2>&1
  local rc=$?
  echo "$rc $((SECONDS - start))" >"$log.rc"
}

# Summary table: one row per tool (rewritten whenever a result changes, and on exit).
write_table() {
  local tool log rc secs summary driver verdict
  status=0 bad=()
  {
    echo "| tool | status | exit | s | sanitizer summary | driver |"
    echo "|---|---|---|---|---|---|"
    for tool in "${RUNS[@]}"; do
      log="$OUTDIR/sanitize_$tool.log"
      rc=none secs=?
      [ -f "$log.rc" ] && read -r rc secs <"$log.rc"
      summary=$(grep -hoE "(ERROR|RACECHECK) SUMMARY: .*" "$log" 2>/dev/null | tail -1)
      driver=$(grep -hoE "sanitize_driver: [0-9]+ cases.*" "$log" 2>/dev/null | tail -1 | sed 's/^sanitize_driver: //')
      if [ "$rc" = none ]; then verdict=NOT-FINISHED; status=1
      elif [ "$tool" = canary ]; then
        if [ "$rc" = 99 ] && grep -q "Invalid __global__" "$log"; then verdict=caught; else verdict=MISSED; status=1; fi
      elif [ "$rc" = 0 ] && [ -n "$summary" ] && ! grep -qE "SUMMARY: [1-9]" <<<"$summary"; then verdict=clean
      elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then verdict=TIMEOUT; status=1
      elif [ "$rc" = 99 ]; then verdict=ERRORS; status=1
      elif [ "$rc" = 1 ]; then verdict=DRIVER-FAILED; status=1
      else verdict=FAILED; status=1
      fi
      echo "| $tool | $verdict$([ -f "$log.parallel" ] && echo " (rerun alone)")$([ -f "$log.norerun" ] && echo " (no time to rerun alone)") | $rc | $secs | ${summary:-none} | ${driver:-no driver line} |"
      [ "$verdict" = clean ] || [ "$verdict" = caught ] || bad+=("$tool")
    done
  } >"$OUTDIR/sanitizer.md.tmp" && mv "$OUTDIR/sanitizer.md.tmp" "$OUTDIR/sanitizer.md"
}
left() { [ "$DEADLINE" -gt 0 ] && echo $((DEADLINE - SECONDS)) || echo "$TIMEOUT"; }

# The canary (short) first, then the tools, JOBS at a time.
RUNS=($([ "$CANARY" = 1 ] && echo canary) "${TOOLS[@]}")
trap 'write_table; trap - EXIT; exit 1' TERM INT
trap write_table EXIT
pids=()
for run in "${RUNS[@]}"; do
  echo "== compute-sanitizer --tool ${run/canary/memcheck} -> $OUTDIR/sanitize_$run.log"
  limit=$(left); [ "$limit" -lt "$TIMEOUT" ] || limit=$TIMEOUT
  [ "$limit" -ge 5 ] || { echo "== no time left for $run (NOT-FINISHED)"; continue; }
  if [ "$run" = canary ]; then
    SECS_LIMIT=$limit run_tool memcheck "$OUTDIR/sanitize_canary.log" --canary &
  else
    SECS_LIMIT=$limit run_tool "$run" "$OUTDIR/sanitize_$run.log" &
  fi
  pids+=($!)
  if [ ${#pids[@]} -ge "$JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
wait
write_table
# A run that ended without a sanitizer summary and not by timeout may have failed to start
# beside the others: once more, alone, in the time left (one after another, each bounded).
if [ "$JOBS" -gt 1 ]; then
  for run in "${RUNS[@]}"; do
    log="$OUTDIR/sanitize_$run.log"
    read -r rc _ <"$log.rc" 2>/dev/null || rc=none
    if ! grep -qE "(ERROR|RACECHECK) SUMMARY" "$log" && [ "$rc" != 124 ] && [ "$rc" != 137 ]; then
      limit=$(($(left) - 5)); [ "$limit" -lt "$TIMEOUT" ] || limit=$TIMEOUT
      if [ "$limit" -lt 10 ]; then
        echo "== $run ended without a summary (exit $rc) beside the others; no time left to rerun it alone"
        : >"$log.norerun"
        continue
      fi
      echo "== $run ended without a summary (exit $rc) beside the others: once more, alone (at most $limit s)"
      mv "$log" "$log.parallel"
      rm -f "$log.rc"
      if [ "$run" = canary ]; then SECS_LIMIT=$limit run_tool memcheck "$log" --canary; else SECS_LIMIT=$limit run_tool "$run" "$log"; fi
      write_table
    fi
  done
fi

write_table
trap - EXIT TERM INT
cat "$OUTDIR/sanitizer.md"
for tool in "${bad[@]}"; do  # the first reports of each tool that was not clean
  echo "-- $tool: $OUTDIR/sanitize_$tool.log"
  grep -E "^========= [^ ]|^FAIL|Error|error" "$OUTDIR/sanitize_$tool.log" 2>/dev/null | grep -v "COMPUTE-SANITIZER" | head -15
done
rm -f "$OUTDIR"/*.rc "$OUTDIR"/*.norerun
exit $status
