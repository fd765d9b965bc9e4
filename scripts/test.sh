#!/usr/bin/env bash
# Set up (first time), lint (ruff, mypy, the import-layer contracts) and run the whole test suite against real
# Mosquitto and real InfluxDB.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
