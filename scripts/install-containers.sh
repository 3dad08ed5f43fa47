#!/usr/bin/env bash
# Installs what tests/tests/containers.rs runs real containers with, from Debian's packages:
# podman (with conmon, netavark and aardvark-dns: a container network whose DNS resolves
# container names, as a headless Service does), buildah (builds the image from scratch, no
# registry), runc (this machine's hybrid cgroups v1 is refused by crun) and skopeo (copies the
# image to an OCI archive); netavark sets the network up with iptables.
#
# Idempotent: when every tool is on PATH it only prints their versions. Otherwise it runs
# `apt-get update` once and installs without recommends; it never starts a service.
#
# Usage: scripts/install-containers.sh        (as root, or with sudo available)
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

versions() {
  podman --version
  buildah --version
  runc --version | head -n1
  skopeo --version
}

tools=(podman buildah runc skopeo iptables)
missing=0
for t in "${tools[@]}"; do have "$t" || missing=1; done
# aardvark-dns is what makes container names resolve on a `podman network create` network.
[ -x /usr/lib/podman/aardvark-dns ] || have aardvark-dns || missing=1
if [ "$missing" = 0 ]; then
  versions
  exit 0
fi

SUDO=()
if [ "$(id -u)" != 0 ]; then
  if have sudo; then
    SUDO=(sudo)
  else
    echo "install-containers: need root for apt-get (or install podman buildah runc skopeo yourself)" >&2
    exit 1
  fi
fi
if ! have apt-get; then
  echo "install-containers: no apt-get here; install podman, buildah, runc and skopeo by hand" >&2
  exit 1
fi

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  # 101 = "action forbidden": package scripts must not start services.
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  trap '"${SUDO[@]}" rm -f "$policy"' EXIT
fi

echo "install-containers: apt-get update" >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
echo "install-containers: apt-get install podman buildah runc skopeo" >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  podman buildah runc skopeo conmon netavark aardvark-dns iptables catatonit uidmap fuse-overlayfs >/dev/null

for t in "${tools[@]}"; do
  have "$t" || { echo "install-containers: $t is not on PATH after installing" >&2; exit 1; }
done
versions
