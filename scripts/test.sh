#!/usr/bin/env bash
# Runs meshward's tests on a fresh Debian machine: installs what they need, then
# `cargo test --workspace`. Safe to re-run. Root is needed for the apt step only
# when a package is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: the integration environment needs iproute2 (network
# namespaces, veth), curl (real requests from pods), iptables and nftables (capture);
# the issuer's datastore tests need a PostgreSQL server; the detection test runs
# real HTTP servers (nginx and Node here, Go's net/http and Python's http.server
# from the machine's Go and Python).
# shellcheck source=scripts/packages.sh
. scripts/packages.sh
ensure_packages iproute2 curl iptables nftables procps postgresql nginx-light nodejs softhsm2

# PostgreSQL for the issuer's datastore tests: start Debian's cluster (no systemd
# here), make a test role, and tell the tests where it is.
if command -v pg_lsclusters >/dev/null; then
  read -r pg_version pg_cluster _ < <(pg_lsclusters -h | head -n 1) || true
  if [ -z "${pg_version:-}" ]; then
    pg_version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
    pg_cluster=main
    pg_createcluster "$pg_version" "$pg_cluster" >/dev/null
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster "$pg_version" "$pg_cluster" start
    for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  fi
  su postgres -c "psql -q -v ON_ERROR_STOP=1" <<'SQL'
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'meshward') THEN
    CREATE ROLE meshward LOGIN SUPERUSER PASSWORD 'meshward';
  END IF;
END$$;
SQL
  export MESHWARD_TEST_POSTGRES_URL=postgres://meshward:meshward@127.0.0.1:5432/postgres
fi

# py-spiffe: a Workload API client no one here wrote, run inside a pod by the
# integration tests.
# (asked from /: here, the repository's spiffe/ directory would pass for it)
if ! (cd / && python3 -c 'import spiffe.workloadapi') 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check spiffe
fi

# The real Kubernetes control plane (etcd, kube-apiserver, kubectl), helm and real
# SPIRE (spire-server, spire-agent) for the tests that run against them: built once
# from their Go modules into /var/cache (about 12 minutes on 2 cores, helm up to 10
# more, SPIRE about 20 more), found there at once afterwards.
if command -v go >/dev/null; then
  eval "$(scripts/peers.sh)"
else
  echo "test.sh: Go is missing, so the real control plane and SPIRE are not built (their tests skip; CI fails them)" >&2
fi

# Leftovers of an earlier, killed run would only waste addresses; remove them.
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
  for ns in $(ip netns list | awk '{print $1}' | grep '^mwt' || true); do ip netns del "$ns" || true; done
fi

cargo test --workspace --locked "$@"
