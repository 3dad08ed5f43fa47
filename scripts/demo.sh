#!/usr/bin/env bash
# The main job on an embedded default: builds, then starts a local cluster (5 nodes on
# loopback, each with a repo in a temporary directory) running the three simulated sensors,
# and prints readings live as node0 receives them. Flags: --nodes N --duration 30s --seed S
# --interval 1s. Ctrl-C stops every process.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --workspace --bins
exec target/debug/sensornet-demo "$@"
