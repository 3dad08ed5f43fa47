#!/usr/bin/env bash
# The release build, as the Dockerfile runs it: `node`, `sensornet` and `sensor` into
# target/release/. Benchmarks and tests build the whole workspace's binaries with the same
# profile (scripts/bench.sh, scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p sensornet-node -p sensornet-sensors --bins
