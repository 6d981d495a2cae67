#!/usr/bin/env bash
# Runs every check and test of corral: formatting, lints, unit tests and the end-to-end tests
# (as root, against the real kernel, runc, CNI plugins and a local registry). As another user it
# runs all but the end-to-end tests and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  # Without root: everything that does not need it (formatting, lints, the unit tests and the
  # integration tests of the library crates, which skip their root-only cases).
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets -- -D warnings
  cargo test --workspace --exclude corral-e2e -- --test-threads="${CORRAL_TEST_THREADS:-2}"
  echo "fmt, clippy and the unit tests passed; the end-to-end tests (crate corral-e2e) need root: sudo $0" >&2
  exit 0
fi

# kubelet v1.20.2 for tests/tests/kubelet.rs: built once per machine (~5 minutes, cached), in the
# background at low priority while the workspace builds.
KUBELET_LOG=$(mktemp /tmp/corral-build-kubelet.XXXXXX.log)
trap 'rm -f "$KUBELET_LOG"' EXIT
nice -n 10 ./scripts/build-kubelet.sh >"$KUBELET_LOG" 2>&1 &
KUBELET_BUILD=$!

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests start the binaries this builds (target/debug/corrald, corral-pause, ...).
cargo build --workspace --bins
if wait "$KUBELET_BUILD"; then
  export CORRAL_KUBELET; CORRAL_KUBELET=$(tail -n 1 "$KUBELET_LOG")
  grep -h '^kubelet built in' "$KUBELET_LOG" || true
else
  echo "building kubelet failed (tests/tests/kubelet.rs will fail under CI=true):" >&2
  tail -n 30 "$KUBELET_LOG" >&2
fi
cargo test --workspace -- --test-threads="${CORRAL_TEST_THREADS:-2}"
