#!/usr/bin/env bash
# meshward's end-to-end benchmarks on a fresh Debian machine (root): installs the
# load tools and the peer (iperf3, wrk, h2load, nginx with the stream module),
# builds meshward and the runner in release mode, and prints the table.
# Arguments go to the runner (e.g. --runs 5 --seconds 10; --figures bulk,held
# --variants meshward --perf /tmp/prof to profile the daemons). Micro-benchmarks:
# cargo bench -p meshward-benches --bench micro (and the policy and issuer benches).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/packages.sh
. scripts/packages.sh
ensure_packages iproute2 iptables curl iperf3 wrk nghttp2-client nginx-light libnginx-mod-stream
case " $* " in *" --perf"*) ensure_packages linux-perf ;; esac
case " $* " in *" --instructions"*) ensure_packages valgrind ;; esac
cargo build --release --locked -p meshward -p meshward-benches
exec "${CARGO_TARGET_DIR:-target}/release/meshward-bench" "$@"
