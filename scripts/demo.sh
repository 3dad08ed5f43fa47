#!/usr/bin/env bash
# The main job on an embedded default: builds, then starts a local cluster (5 nodes on
# loopback, each with a repo in a temporary directory) running the three simulated sensors,
# and prints node0's dashboard address, then readings live as node0 receives them. Flags:
# --nodes N --duration 30s --seed S --interval 1s. Ctrl-C stops every process.
set -euo pipefail
cd "$(dirname "$0")/.."
# Cargo's own progress (a bar on a terminal, one line per crate otherwise): the first build on
# a fresh clone compiles ~400 crates, several minutes on a small machine.
if [ ! -x target/release/sensornet-demo ]; then
  echo "demo: first build of sensornet (a few minutes on 2 cores; later runs take seconds)..." >&2
fi
cargo build --release --workspace --bins
echo "demo: built; starting the cluster (node0's dashboard address follows)" >&2
exec target/release/sensornet-demo "$@"
