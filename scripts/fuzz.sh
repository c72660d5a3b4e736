#!/usr/bin/env bash
# Builds every fuzz target (fuzz/, one per parser of untrusted input) and runs each
# on its committed seeds plus what earlier runs found.
#
#   ./scripts/fuzz.sh          # CI: 10 s per target
#   ./scripts/fuzz.sh 600      # by hand: 600 s per target
#   ./scripts/fuzz.sh 600 jwt  # only the targets named
#
# Any crash (a panic or a failed assertion), timeout (-timeout, 10 s per input) or
# out-of-memory (2 GB) fails the run; libFuzzer leaves the input that did it under
# fuzz/artifacts/<target>/ (replay: cargo +nightly fuzz run <target> <file>, with
# the same -s and --codegen-units as below).
#
# Built without a sanitizer by default (FUZZ_SANITIZER=none): the workspace
# forbids unsafe code, and an AddressSanitizer build of the dependency tree (kube,
# tonic, aws-lc, sqlx) costs CI more than it is likely to find. Leak detection
# needs one: FUZZ_SANITIZER=address ./scripts/fuzz.sh 600 for a deeper run.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-10}
shift || true
sanitizer=${FUZZ_SANITIZER:-none}
toolchain=${FUZZ_TOOLCHAIN:-nightly}

# cargo-fuzz needs a nightly compiler (sanitizer coverage flags)
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
  rustup toolchain install "$toolchain" --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# 16 codegen units: a much shorter build of the dependency tree for slightly
# slower executions, the right trade for runs of seconds to minutes
flags=(--sanitizer "$sanitizer" --codegen-units 16)
echo "== fuzz: building (sanitizer: $sanitizer)"
build_started=$SECONDS
cargo "+$toolchain" fuzz build "${flags[@]}"
echo "== fuzz: built in $((SECONDS - build_started)) s"

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi
# what the runs find goes to a scratch directory; the committed seeds stay as
# they are (fuzz/corpus/<target>/seed-*)
scratch=${CARGO_TARGET_DIR:-$PWD/target}/fuzz-corpus
failed=()
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  echo "== fuzz: $target, ${seconds} s"
  set +e
  cargo "+$toolchain" fuzz run "${flags[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    grep -v -e '^INFO:' -e 'NEW_FUNC' -e '^#[0-9]*	\(NEW\|REDUCE\|pulse\)'
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
echo "== fuzz: ${#targets[@]} targets passed"
