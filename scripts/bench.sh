#!/usr/bin/env bash
# Benchmarks sensornet beside Mosquitto (QoS 0; QoS 1 with persistence), a bare rust-libp2p
# gossipsub swarm and Kubo 0.22 pubsub (seed 003's system), same load, same machine, one
# invocation, with MQTT QoS 1 rows (sensornet node 0 → node 2 and Mosquitto through the same
# mosquitto_pub/mosquitto_sub clients: sent, received, lost; --mqtt-only runs those alone and
# writes target/bench/mqtt.json). Quick mode (the default, run in CI)
# takes about two minutes after the release build; --full runs longer windows, a 100,000-reading
# catch-up and 30/50-node meshes. Writes target/bench/results.json and target/bench/scale.png.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-bench-tools.sh
scripts/install-kubo.sh
# The whole workspace's binaries, as scripts/test.sh builds them: one feature set, so CI
# compiles the node once for the benchmarks and the tests.
cargo build --release --locked --workspace --bins
"${CARGO_TARGET_DIR:-target}"/release/sensornet-bench "$@"
case " $* " in
  *" --mqtt-only "*) ;;
  *) .tools/venv/bin/python scripts/plot_scale.py target/bench/results.json target/bench/scale.png ;;
esac
