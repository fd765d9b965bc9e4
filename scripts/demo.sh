#!/usr/bin/env bash
# Set up (first time) and run the demo: a simulated fleet of all six pilot cities end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/pilotwatch demo "$@"
