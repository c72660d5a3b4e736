#!/usr/bin/env bash
# The quick start on a fresh Debian machine: installs what the demo's environment
# needs (iproute2, iptables, curl), builds meshward, and runs `meshward demo` with
# any arguments given (e.g. --check). Needs root: the demo creates network
# namespaces and iptables rules inside them.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/packages.sh
. scripts/packages.sh
ensure_packages iproute2 iptables curl
cargo build --locked -p meshward
exec "${CARGO_TARGET_DIR:-target}/debug/meshward" demo "$@"
