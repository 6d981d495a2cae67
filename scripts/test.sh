#!/usr/bin/env bash
# Runs every check and test of corral: formatting, lints, unit tests and the end-to-end tests
# (as root, against the real kernel, runc, CNI plugins and a local registry).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "the end-to-end tests need root: sudo $0" >&2; exit 1; }

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests start the binaries this builds (target/debug/corrald, corral-pause, ...).
cargo build --workspace --bins
cargo test --workspace -- --test-threads="${CORRAL_TEST_THREADS:-2}"
