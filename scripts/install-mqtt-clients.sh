#!/usr/bin/env bash
# Installs the real MQTT clients tests/tests/mqtt.rs drives: mosquitto_pub/mosquitto_sub
# (Debian's mosquitto-clients) and paho-mqtt 2.x (PyPI, MQTT 3.1.1 and 5.0) in .tools/mqtt-venv.
# Idempotent and quick when both are there; no service is started.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "install-mqtt-clients: need root for apt-get (package mosquitto-clients)" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends mosquitto-clients >/dev/null
fi
venv=.tools/mqtt-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import paho.mqtt' 2>/dev/null || "$venv/bin/pip" install -q 'paho-mqtt>=2,<3'
echo "install-mqtt-clients: mosquitto_pub $(mosquitto_pub --help 2>&1 | grep -o "version [0-9.]*" | head -n1), paho-mqtt $("$venv/bin/python" -c 'import paho.mqtt as m; print(m.__version__)')"
