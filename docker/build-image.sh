#!/usr/bin/env bash
# Builds the meshward image without a docker engine (root; Debian):
#  1. a static binary: glibc static-pie (`-C target-feature=+crt-static`), no musl
#     target needed;
#  2. a Debian minbase root filesystem with what capture needs (iptables with both
#     backends, nftables, ca-certificates), from the apt mirror this machine uses;
#  3. `buildah bud` of docker/Dockerfile with vfs storage and chroot isolation, then
#     an OCI archive in docker/build/meshward-oci.tar, and a smoke run inside it.
# Usage: docker/build-image.sh [TAG]   (default: the crate version)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/packages.sh
. scripts/packages.sh
ensure_packages buildah debootstrap
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
tag=${1:-$version}
out=docker/build
mkdir -p "$out"

RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked -p meshward \
  --target x86_64-unknown-linux-gnu --target-dir target/static
# no debug info in the image (the release profile keeps line tables for backtraces)
strip -o "$out/meshward" target/static/x86_64-unknown-linux-gnu/release/meshward

if [ ! -f "$out/rootfs.tar" ]; then
  mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
  mirror=${mirror:-http://deb.debian.org/debian}
  rm -rf "$out/rootfs"
  debootstrap --variant=minbase --include=iptables,nftables,ca-certificates bookworm "$out/rootfs" "$mirror"
  rm -rf "$out/rootfs/var/lib/apt/lists/"* "$out/rootfs/var/cache/apt/archives/"*.deb \
    "$out/rootfs/usr/share/doc/"* "$out/rootfs/usr/share/man/"* "$out/rootfs/usr/share/locale/"*
  tar -C "$out/rootfs" --numeric-owner -cf "$out/rootfs.tar" .
  rm -rf "$out/rootfs"
fi

buildah --storage-driver vfs build --isolation chroot --layers=false --timestamp 0 \
  --build-arg "VERSION=$tag" -t "localhost/meshward:$tag" -f docker/Dockerfile "$out"
rm -f "$out/meshward-oci.tar"
buildah --storage-driver vfs push "localhost/meshward:$tag" "oci-archive:$out/meshward-oci.tar:localhost/meshward:$tag"
container=$(buildah --storage-driver vfs from "localhost/meshward:$tag")
trap 'buildah --storage-driver vfs rm "$container" >/dev/null' EXIT
buildah --storage-driver vfs run --isolation chroot "$container" -- /usr/local/bin/meshward --version
buildah --storage-driver vfs run --isolation chroot "$container" -- iptables --version
echo "built localhost/meshward:$tag -> $out/meshward-oci.tar"
