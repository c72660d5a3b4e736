#!/usr/bin/env bash
# The quick start on a fresh Debian machine: installs what the demo's environment
# needs (iproute2, iptables, curl), builds meshward, and runs `meshward demo` with
# any arguments given (e.g. --check). Needs root: the demo creates network
# namespaces and iptables rules inside them. With --kube, etcd, kube-apiserver and
# kubectl are built first from their Go modules (scripts/peers.sh: once, ~12 min on
# 2 cores; cached in /var/cache afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/packages.sh
. scripts/packages.sh
ensure_packages iproute2 iptables curl
cargo build --locked -p meshward
for arg in "$@"; do
  if [ "$arg" = --kube ]; then
    # the demo finds them through the variables peers.sh prints
    eval "$(scripts/peers.sh)"
  fi
done
exec "${CARGO_TARGET_DIR:-target}/debug/meshward" demo "$@"
