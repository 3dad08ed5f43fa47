#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, builds, runs every test.
# SENSORNET_SLOW=1 adds the slow scenarios (long fuzzing, big catch-ups, full benchmarks).
# Tests run optimised (--release): the same build the benchmarks and the image use, so CI
# compiles the dependency graph once, and ten daemons at once fit on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
for installer in scripts/install-*.sh; do
  [ -x "$installer" ] || continue
  echo "== $installer"
  "$installer"
done
echo "== build"
cargo build --release --workspace --bins --locked
echo "== test"
# Two test threads on two cores: each integration test runs several daemons.
cargo test --release --workspace --locked --no-fail-fast -- --test-threads="${SENSORNET_TEST_THREADS:-2}"
