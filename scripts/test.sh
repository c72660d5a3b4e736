#!/usr/bin/env bash
# Runs meshward's tests on a fresh Debian machine: installs what they need, then
# `cargo test --workspace`. Safe to re-run. Root is needed for the apt step only
# when a package is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: the integration environment needs iproute2 (network
# namespaces, veth), curl (real requests from pods), iptables and nftables (capture).
packages=(iproute2 curl iptables nftables procps)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Leftovers of an earlier, killed run would only waste addresses; remove them.
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
  for ns in $(ip netns list | awk '{print $1}' | grep '^mwt' || true); do ip netns del "$ns" || true; done
fi

cargo test --workspace --locked "$@"
