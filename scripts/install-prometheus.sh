#!/usr/bin/env bash
# Installs Prometheus and promtool from Debian's `prometheus` package (2.42 on Debian 12), which the
# observability checks use: `promtool check rules`, `promtool test rules`, and a real Prometheus
# scraping running nodes (tests/tests/observability.rs).
#
# Idempotent: when both `prometheus` and `promtool` are on PATH it only prints their versions.
# Otherwise it runs `apt-get update` once and installs the package without recommends. It never
# starts the Prometheus service: while it installs, a temporary /usr/sbin/policy-rc.d (unless one
# exists already) tells invoke-rc.d not to start anything, so this is safe on machines with or
# without systemd. Tests start their own `prometheus --config.file=… --storage.tsdb.path=…`.
#
# Usage: scripts/install-prometheus.sh        (as root, or with sudo available)
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

versions() {
  prometheus --version 2>&1 | head -n1
  promtool --version 2>&1 | head -n1
}

if have prometheus && have promtool; then
  versions
  exit 0
fi

SUDO=()
if [ "$(id -u)" != 0 ]; then
  if have sudo; then
    SUDO=(sudo)
  else
    echo "install-prometheus: need root for apt-get (or install Debian's 'prometheus' package yourself)" >&2
    exit 1
  fi
fi
if ! have apt-get; then
  echo "install-prometheus: no apt-get here; install Prometheus 2.x (prometheus + promtool) by hand" >&2
  exit 1
fi

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  # 101 = "action forbidden": package scripts must not start the service.
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  trap '"${SUDO[@]}" rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-prometheus: apt-get update" >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
echo "install-prometheus: apt-get install prometheus" >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null

if ! have prometheus || ! have promtool; then
  echo "install-prometheus: the prometheus package installed, but prometheus/promtool are not on PATH" >&2
  exit 1
fi
versions
