#!/usr/bin/env bash
# Installs Debian's `chromium`, the real headless browser tests/tests/dashboard.rs drives.
# Idempotent: when `chromium` is on PATH it only prints its version.
#
# Usage: scripts/install-chromium.sh        (as root, or with sudo available)
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have chromium; then
  chromium --version 2>/dev/null | head -n1 || true
  exit 0
fi

SUDO=()
if [ "$(id -u)" != 0 ]; then
  if have sudo; then
    SUDO=(sudo)
  else
    echo "install-chromium: need root for apt-get (or install Debian's 'chromium' package yourself)" >&2
    exit 1
  fi
fi
if ! have apt-get; then
  echo "install-chromium: no apt-get here; install Chromium by hand (the dashboard test needs it)" >&2
  exit 1
fi

echo "install-chromium: apt-get update" >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
echo "install-chromium: apt-get install chromium" >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

if ! have chromium; then
  echo "install-chromium: the chromium package installed, but chromium is not on PATH" >&2
  exit 1
fi
chromium --version 2>/dev/null | head -n1 || true
