#!/usr/bin/env bash
# One-command GPU check: build, test, sanitize and benchmark within a time budget.
#   scripts/gpu_check.sh OUTDIR [--quick] [--only build|test|sanitize|bench ...] [--budget SECONDS]
# See scripts/gpu_check.py for the steps and the output limits.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONUNBUFFERED=1
exec "$PY" scripts/gpu_check.py "$@"
