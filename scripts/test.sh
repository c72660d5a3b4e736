#!/usr/bin/env bash
# Runs meshward's tests on a fresh Debian machine: installs what they need, then
# `cargo test --workspace`. Safe to re-run. Root is needed for the apt step only
# when a package is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use. Today: none beyond the Rust toolchain; the
# integration environment, issuer datastore and capture issues add theirs here
# (iproute2, iptables, postgresql, protobuf-compiler, curl).
packages=()
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo test --workspace --locked "$@"
