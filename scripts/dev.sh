#!/usr/bin/env bash
# Set-up and the two everyday jobs, from a fresh clone:
#   bash scripts/dev.sh bench [ARGS]   set up, build, run benchmarks/bench_cardinality.py [ARGS]
#   bash scripts/dev.sh test  [ARGS]   set up, build, run the whole test suite (pytest [ARGS])
#   bash scripts/dev.sh setup          set up and build only
# Set-up: a virtual environment in .venv with requirements-dev.txt (skipped when already
# current), then the extension built in place against that torch (ninja, incremental).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}

setup() {
  if [ ! -x "$PY" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
  fi
  local stamp="$VENV/.requirements.sha"
  local want
  want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # pip's own log, not the console: it is long and full of harmless index warnings here.
    { "$PY" -m pip install -q --upgrade pip && "$PY" -m pip install -q -r requirements-dev.txt; } \
      > "$VENV/pip.log" 2>&1 || { cat "$VENV/pip.log"; echo "pip install failed" >&2; exit 1; }
    echo "$want" > "$stamp"
  fi
  # The extension must be built against the torch it runs with, hence in place, no isolation.
  MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" setup.py -q build_ext --inplace > "$VENV/build.log" 2>&1 \
    || { cat "$VENV/build.log"; echo "extension build failed" >&2; exit 1; }
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup ;;
  test) setup; exec "$PY" -m pytest "$@" ;;
  bench) setup; exec "$PY" benchmarks/bench_cardinality.py "$@" ;;
  *) echo "usage: bash scripts/dev.sh {setup|test|bench} [ARGS]" >&2; exit 2 ;;
esac
