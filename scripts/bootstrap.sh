#!/usr/bin/env bash
# Installs what pilotwatch needs on Debian 12 / Ubuntu / Raspberry Pi OS: Mosquitto and InfluxDB from the
# distribution, and a virtual environment in .venv with pilotwatch and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v influxd >/dev/null 2>&1 || need_apt+=(influxdb)
# The deployment broker's dynamic-security plugin (tests run the deploy config): Debian's mosquitto ships it.
compgen -G '/usr/lib/*/mosquitto_dynamic_security.so' >/dev/null || [ -f /usr/lib/mosquitto_dynamic_security.so ] \
  || need_apt+=(mosquitto)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# Headless Chromium opens the alert inbox page and the evaluation's report.html in the tests (through Playwright,
# no browser download).
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing from the distribution: ${need_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The distribution's packages also start system services where systemd runs; pilotwatch starts its own
# instances on other ports and never uses those.

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"pilotwatch needs Python 3.11 or newer, this is {sys.version.split()[0]}")
PY

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.pilotwatch-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
