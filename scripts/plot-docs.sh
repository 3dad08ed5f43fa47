#!/usr/bin/env bash
# Redraws docs/scale.png and docs/comparison.png from docs/figures.json (update the figures
# there after a `scripts/bench.sh --full` run, as docs/performance.md's tables). matplotlib
# comes from PyPI into .tools/venv (scripts/install-bench-tools.sh makes the same venv).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .tools/venv/bin/python ] || python3 -m venv .tools/venv
.tools/venv/bin/python -c 'import matplotlib' 2>/dev/null || .tools/venv/bin/pip install -q matplotlib
.tools/venv/bin/python scripts/plot_docs.py docs/figures.json docs
