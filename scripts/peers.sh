#!/usr/bin/env bash
# Builds the real systems meshward's tests run against (etcd, kube-apiserver,
# kubectl) from their Go modules, at pinned versions, into a cache outside the work
# tree. Safe to re-run: a peer already built is not rebuilt, so a second run
# returns at once. Fetches only from the Go module proxy.
#
#   ./scripts/peers.sh            build what is missing, print the paths
#   eval "$(./scripts/peers.sh)"  ... and export them (MESHWARD_ETCD, ...)
#
# The cache: $MESHWARD_PEERS_CACHE, else /var/cache/meshward-peers (Go's caches in
# /var/cache/meshward-go, removed after a build with MESHWARD_PEERS_SLIM=1), else
# the same under ~/.cache when /var/cache is not writable. The paths are also
# written to <cache>/env (shell `export` lines).
# Progress goes to stderr; stdout carries only the `export` lines.
set -euo pipefail

# Pinned versions: a bump is one line. (Kubernetes' staging modules k8s.io/* follow
# k8s.io/kubernetes: v1.37.2 -> v0.37.2.)
ETCD_VERSION=v3.6.17
KUBERNETES_VERSION=v1.37.2
HELM_VERSION=v4.3.2
SPIRE_VERSION=v1.15.3

# /var/cache when it can be written (root, CI), else the user's cache directory.
cache_root=/var/cache
if ! mkdir -p "$cache_root/meshward-peers" 2>/dev/null || [ ! -w "$cache_root/meshward-peers" ]; then
  cache_root=${XDG_CACHE_HOME:-$HOME/.cache}
fi
cache=${MESHWARD_PEERS_CACHE:-$cache_root/meshward-peers}
go_cache=${MESHWARD_GO_CACHE:-$cache_root/meshward-go}

log() { echo "peers: $*" >&2; }

etcd_dir=$cache/etcd-$ETCD_VERSION
kube_dir=$cache/kubernetes-$KUBERNETES_VERSION

go_env() {
  export GOMODCACHE=$go_cache/mod GOCACHE=$go_cache/build GOFLAGS=-mod=mod
  export GOPROXY=${GOPROXY:-https://proxy.golang.org} CGO_ENABLED=0
  # Verified against the checksum database, as any `go get`.
  command -v go >/dev/null || { log "Go is not installed (needed to build the peers)"; exit 1; }
}

# go_build DIR LDFLAGS PKG... : builds each main package into DIR/bin.tmp from the
# module in DIR/src.
go_build() {
  local dir=$1 ldflags=$2
  shift 2
  local pkg
  for pkg in "$@"; do
    log "building $pkg"
    (cd "$dir/src" && go build -trimpath -ldflags="-s -w $ldflags" -o "$dir/bin.tmp/" "$pkg")
  done
}

build_etcd() {
  [ -x "$etcd_dir/bin/etcd" ] && [ -x "$etcd_dir/bin/etcdctl" ] && return 0
  go_env
  log "etcd $ETCD_VERSION: building into $etcd_dir"
  rm -rf "$etcd_dir/src" "$etcd_dir/bin.tmp"
  mkdir -p "$etcd_dir/src" "$etcd_dir/bin.tmp"
  (
    cd "$etcd_dir/src"
    go mod init meshward.test/peers/etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION" >&2
  )
  go_build "$etcd_dir" "" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3
  # `go build` names a binary after its package path without the major version.
  mv "$etcd_dir/bin.tmp/server" "$etcd_dir/bin.tmp/etcd"
  rm -rf "$etcd_dir/bin"
  mv "$etcd_dir/bin.tmp" "$etcd_dir/bin"
}

build_kubernetes() {
  [ -x "$kube_dir/bin/kube-apiserver" ] && [ -x "$kube_dir/bin/kubectl" ] && return 0
  go_env
  local staging=v0.${KUBERNETES_VERSION#v1.}
  log "kubernetes $KUBERNETES_VERSION (staging $staging): building into $kube_dir"
  rm -rf "$kube_dir/src" "$kube_dir/bin.tmp"
  mkdir -p "$kube_dir/src" "$kube_dir/bin.tmp"
  local gomod
  gomod=$(cd "$kube_dir/src" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  [ -f "$gomod" ] || { log "no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION"; exit 1; }
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
  # ./staging/src/...; a module that depends on it must map each to its release.
  {
    echo "module meshward.test/peers/kubernetes"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._/-]*\) => \./staging/src/.*$#replace \1 => \1 '"$staging"'#p' "$gomod"
  } >"$kube_dir/src/go.mod"
  grep -q '^replace k8s.io/api ' "$kube_dir/src/go.mod" || {
    log "found no staging modules in $gomod"
    exit 1
  }
  (cd "$kube_dir/src" && go get "k8s.io/kubernetes@$KUBERNETES_VERSION" >&2)
  # The version a release build stamps in (`kubectl version`, the server's /version);
  # without it both say v0.0.0-master.
  local minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  local stamp="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    stamp+=" -X $pkg.gitTreeState=clean"
  done
  go_build "$kube_dir" "$stamp" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
  rm -rf "$kube_dir/bin"
  mv "$kube_dir/bin.tmp" "$kube_dir/bin"
}

# Helm, for charts/meshward's checks (lint, template, install against the test
# control plane).
helm_dir=$cache/helm-$HELM_VERSION
build_helm() {
  [ -x "$helm_dir/bin/helm" ] && return 0
  go_env
  log "helm $HELM_VERSION: building into $helm_dir"
  rm -rf "$helm_dir/src" "$helm_dir/bin.tmp"
  mkdir -p "$helm_dir/src" "$helm_dir/bin.tmp"
  (
    cd "$helm_dir/src"
    go mod init meshward.test/peers/helm >/dev/null 2>&1
    go get "helm.sh/helm/v4@$HELM_VERSION" >&2
  )
  # the version `helm version` reports (a release build stamps it in; else "v4.3")
  go_build "$helm_dir" "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    helm.sh/helm/v4/cmd/helm
  rm -rf "${helm_dir:?}/bin"
  mv "$helm_dir/bin.tmp" "$helm_dir/bin"
  # built in this run: MESHWARD_PEERS_SLIM=1 may remove Go's caches below
  built_before=0
}

# SPIRE (spire-server, spire-agent): the other side of federation in the tests.
# Its SQLite datastore is mattn/go-sqlite3, which needs cgo (gcc): the one peer
# built with CGO_ENABLED=1. The version stamped in is SPIRE's own form (1.15.3,
# no `v`): its datastore parses it as semver at start.
spire_dir=$cache/spire-$SPIRE_VERSION
build_spire() {
  [ -x "$spire_dir/bin/spire-server" ] && [ -x "$spire_dir/bin/spire-agent" ] && return 0
  go_env
  command -v gcc >/dev/null || { log "gcc is not installed (SPIRE's SQLite datastore needs cgo)"; exit 1; }
  log "spire $SPIRE_VERSION: building into $spire_dir"
  rm -rf "$spire_dir/src" "$spire_dir/bin.tmp"
  mkdir -p "$spire_dir/src" "$spire_dir/bin.tmp"
  (
    cd "$spire_dir/src"
    go mod init meshward.test/peers/spire >/dev/null 2>&1
    go get "github.com/spiffe/spire@$SPIRE_VERSION" >&2
    # The module proxy refuses the version SPIRE requires (v1.1.0) of the SDK its
    # EJBCA UpstreamAuthority plugin uses; v1.0.2, which it serves, builds the same
    # plugin, and the tests never load it.
    go mod edit -replace github.com/Keyfactor/ejbca-go-client-sdk=github.com/Keyfactor/ejbca-go-client-sdk@v1.0.2
  )
  (
    export CGO_ENABLED=1
    go_build "$spire_dir" "-X github.com/spiffe/spire/pkg/common/version.gittag=${SPIRE_VERSION#v}" \
      github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent
  )
  rm -rf "${spire_dir:?}/bin"
  mv "$spire_dir/bin.tmp" "$spire_dir/bin"
  # built in this run: MESHWARD_PEERS_SLIM=1 may remove Go's caches below
  built_before=0
}

mkdir -p "$cache"
built_before=0
for binary in "$etcd_dir/bin/etcd" "$kube_dir/bin/kube-apiserver"; do
  [ -x "$binary" ] && built_before=$((built_before + 1))
done
build_etcd
build_kubernetes
build_helm
build_spire
# MESHWARD_PEERS_SLIM=1 (CI, whose disk may be small): once built, the binaries
# are the cache; Go's build and module caches (~4 GB) go.
if [ "${MESHWARD_PEERS_SLIM:-0}" = 1 ] && [ "$built_before" -lt 2 ] && [ -d "$go_cache" ]; then
  go_env
  log "removing Go's caches ($go_cache): the binaries are kept"
  go clean -cache -modcache >&2 || true
  rm -rf "$go_cache"
fi

env_file=$cache/env
exports="export MESHWARD_ETCD=$etcd_dir/bin/etcd
export MESHWARD_ETCDCTL=$etcd_dir/bin/etcdctl
export MESHWARD_KUBE_APISERVER=$kube_dir/bin/kube-apiserver
export MESHWARD_KUBECTL=$kube_dir/bin/kubectl
export MESHWARD_HELM=$helm_dir/bin/helm
export MESHWARD_SPIRE_SERVER=$spire_dir/bin/spire-server
export MESHWARD_SPIRE_AGENT=$spire_dir/bin/spire-agent"
if [ "$(cat "$env_file" 2>/dev/null)" != "$exports" ]; then
  printf '%s\n' "$exports" >"$env_file.tmp"
  mv "$env_file.tmp" "$env_file"
fi
printf '%s\n' "$exports"
