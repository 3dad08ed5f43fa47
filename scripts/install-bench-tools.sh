#!/usr/bin/env bash
# Installs the benchmark baselines and plotting: Mosquitto (Debian) and matplotlib (PyPI, in
# .tools/venv). Idempotent; no service is started.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mosquitto >/dev/null || ! command -v mosquitto_pub >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "install-bench-tools: need root for apt-get (package mosquitto, mosquitto-clients)" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients >/dev/null
fi
[ -x .tools/venv/bin/python ] || python3 -m venv .tools/venv
.tools/venv/bin/python -c 'import matplotlib' 2>/dev/null || .tools/venv/bin/pip install -q matplotlib
