#!/usr/bin/env bash
# Builds the node's OCI image here, without any registry: `buildah from scratch` with the
# `node`, `sensornet` and `sensor` binaries and the shared libraries `ldd` lists for them (glibc,
# libgcc, libm: what distroless/cc carries), then the Dockerfile's USER, ENV, EXPOSE, VOLUME,
# ENTRYPOINT and CMD (tests/tests/containers.rs checks the two agree). The Dockerfile stays the
# way users build it; this is the same image for machines that cannot pull a base image.
#
# Uses target/release/ when target/release/node exists (CI builds release for the bench first),
# else target/debug/. Commits to local containers-storage as IMAGE (default
# localhost/sensornet:<chart appVersion>) and, with --archive FILE, also writes an oci-archive.
#
# Usage: scripts/build-image.sh [--image NAME:TAG] [--archive FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/containers.conf}

version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/sensornet/Chart.yaml)
image="localhost/sensornet:${version}"
archive=""
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image="$2"; shift 2 ;;
    --archive) archive="$2"; shift 2 ;;
    *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
  esac
done

bins=target/debug
[ -x target/release/node ] && bins=target/release
for b in node sensornet sensor; do
  [ -x "$bins/$b" ] || { echo "build-image: $bins/$b is missing (cargo build --bins first)" >&2; exit 1; }
done

root=$(mktemp -d)
ctr=""
cleanup() {
  rm -rf "$root" "$root.tar"
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The root filesystem: binaries, their libraries at the paths the dynamic loader looks in, a
# /data owned by the node's uid, and passwd/group entries so tools show a name for 10001.
mkdir -p "$root/usr/local/bin" "$root/data" "$root/etc" "$root/tmp"
for b in node sensornet sensor; do cp "$bins/$b" "$root/usr/local/bin/"; done
for b in node sensornet sensor; do
  ldd "$bins/$b" | grep -o '/[^ ]*' || true
done | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:10001:10001:nonroot:/data:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:10001:\n' >"$root/etc/group"
chmod 1777 "$root/tmp"
chown 10001:10001 "$root/data"
# One layer from a tarball: `buildah add` keeps the tar's owners (a plain copy would make /data root's).
tar -C "$root" --numeric-owner -cf "$root.tar" .

# The Dockerfile's runtime settings (tests/tests/containers.rs compares the image with it).
env_vars=(
  SENSORNET_PATH=/data
  SENSORNET_INIT=true
  SENSORNET_API_ADDR=127.0.0.1:5001
  SENSORNET_METRICS_ADDR=0.0.0.0:9401
  SENSORNET_MQTT_ADDR=127.0.0.1:1883
  SENSORNET_LISTEN=/ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1
  SENSORNET_LOG_FORMAT=json
)
ports=(4001/tcp 4001/udp 5001/tcp 1883/tcp 9401/tcp)

ctr=$(buildah from scratch)
buildah add --quiet "$ctr" "$root.tar" / >/dev/null
cfg=(--user 10001:10001 --entrypoint '["node"]' --cmd '["daemon"]' --volume /data
  --env PATH=/usr/local/bin:/usr/bin:/bin
  --label org.opencontainers.image.source=https://github.com/sensornet/sensornet
  --label org.opencontainers.image.version="$version"
  # The name in the config makes each tag its own image: two builds of the same binaries in
  # one second were otherwise one image ID, and removing one tag (a test's cleanup, which
  # forces) took the image from under the other.
  --label org.opencontainers.image.ref.name="$image")
for e in "${env_vars[@]}"; do cfg+=(--env "$e"); done
for p in "${ports[@]}"; do cfg+=(--port "$p"); done
buildah config "${cfg[@]}" "$ctr"
buildah commit --quiet --rm "$ctr" "$image" >/dev/null
ctr=""
if [ -n "$archive" ]; then
  rm -f "$archive"
  skopeo copy --quiet "containers-storage:$image" "oci-archive:$archive:$image"
fi
size=$(podman image inspect --format "{{.Size}}" "$image")
echo "build-image: $image from $bins ($((size / 1000000)) MB)"
