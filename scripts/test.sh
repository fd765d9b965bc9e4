#!/usr/bin/env bash
# Set up (first time) and run the whole test suite against real Mosquitto and real InfluxDB, then lint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
