#!/usr/bin/env bash
# compute-sanitizer over the CUDA kernel on the test shapes (needs a GPU; run from anywhere):
#   bash scripts/cuda_sanitize.sh            # memcheck, racecheck, synccheck
#   bash scripts/cuda_sanitize.sh memcheck   # one tool
# Runs tests/test_cuda.py's kernel tests (every dtype, shape and launch path, misaligned
# views, empty batches, non-finite values) under each tool; any report fails the script.
# torch's caching allocator is switched off so an out-of-bounds access lands outside its
# allocation and memcheck sees it. CUDA-graph, torch.compile and stream-sleep tests are
# left out (slow under the sanitizer; they exercise the same kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
command -v compute-sanitizer >/dev/null || { echo "compute-sanitizer not on PATH (CUDA toolkit bin/)" >&2; exit 2; }
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
export PYTORCH_NO_CUDA_MEMORY_CACHING=1
SELECT="parity or misaligned or empty or deterministic or non_finite or collinear"
TOOLS=("${@:-memcheck racecheck synccheck}")
for tool in ${TOOLS[@]}; do
  echo "== compute-sanitizer --tool $tool"
  extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check no --check-device-heap yes)
  [ "$tool" = racecheck ] && extra=(--racecheck-report all)
  compute-sanitizer --tool "$tool" "${extra[@]}" --error-exitcode 99 --target-processes all \
    python -m pytest -q -x -p no:cacheprovider tests/test_cuda.py -k "$SELECT"
done
echo "compute-sanitizer: ${TOOLS[*]} clean"
