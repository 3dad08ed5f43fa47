#!/usr/bin/env bash
# Installs what the power-loss tests (tests/tests/power_loss.rs) need to mount their lazy FUSE
# filesystem (tests/src/lazyfs.rs): Debian's `fuse3`, for fusermount3 and /etc/fuse.conf. The
# filesystem is pure Rust (the `fuser` crate talks to /dev/fuse itself), so neither libfuse3-dev
# nor pkg-config is needed. As root the tests mount with mount(2) directly; fusermount3 is the
# way for everyone else.
#
# Idempotent: when fusermount3 is on PATH it only prints its version. It cannot create
# /dev/fuse: a container must be given it (--device /dev/fuse), and the tests say so when it is
# missing.
#
# Usage: scripts/install-fuse.sh        (as root, or with sudo available)
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

report() {
  fusermount3 --version 2>&1 | head -n1
  [ -e /dev/fuse ] || echo "install-fuse: warning: /dev/fuse is missing; the power-loss tests will fail" >&2
}

if have fusermount3; then
  report
  exit 0
fi

SUDO=()
if [ "$(id -u)" != 0 ]; then
  if have sudo; then
    SUDO=(sudo)
  else
    echo "install-fuse: need root for apt-get (or install Debian's 'fuse3' package yourself)" >&2
    exit 1
  fi
fi
if ! have apt-get; then
  echo "install-fuse: no apt-get here; install FUSE 3 (fusermount3) by hand" >&2
  exit 1
fi

echo "install-fuse: apt-get update" >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
echo "install-fuse: apt-get install fuse3" >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fuse3 >/dev/null

if ! have fusermount3; then
  echo "install-fuse: the fuse3 package installed, but fusermount3 is not on PATH" >&2
  exit 1
fi
report
