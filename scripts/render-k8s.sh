#!/usr/bin/env bash
# Regenerates k8s/sensornet.yaml, the plain manifests of the chart with default values
# (a test keeps the two identical).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-k8s-tools.sh >/dev/null
{
  echo "# Rendered from charts/sensornet with default values by scripts/render-k8s.sh; do not edit."
  echo "# kubectl apply -f k8s/   (namespace: default)"
  .tools/bin/helm template sensornet charts/sensornet --namespace default
} > k8s/sensornet.yaml
