#!/usr/bin/env bash
# Fetches the wheels the GPU machine lacks (scripts/gpu_wheels.txt) into .whl/ (git-ignored),
# for Python 3.12 on manylinux x86-64, without their dependencies (the machine has them),
# then checks them: one wheel per listed package, each pure Python or cp312 manylinux
# x86-64, under 64 MiB together. The GPU run carries .whl (see docs/gpu.md).
#   bash scripts/fetch_gpu_wheels.sh          # fetch (needs the package index) and check
#   bash scripts/fetch_gpu_wheels.sh --check  # check what is in .whl/ only
set -euo pipefail
cd "$(dirname "$0")/.."
LIST=scripts/gpu_wheels.txt
DEST=.whl
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

if [ "${1:-}" != "--check" ]; then
  [ $# -eq 0 ] || { echo "fetch_gpu_wheels.sh: expected no argument or --check, got '$1'" >&2; exit 2; }
  mapfile -t specs < <(grep -v '^\s*#' "$LIST" | grep -v '^\s*$')
  rm -rf "$DEST" && mkdir -p "$DEST"
  platforms=()
  for n in $(seq 39 -1 17); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done  # pip matches N exactly
  platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$DEST" "${specs[@]}"
fi
"$PY" scripts/gpu_check_wheels.py "$LIST" "$DEST"
