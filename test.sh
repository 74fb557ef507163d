#!/usr/bin/env bash
# Runs every Tether test on a fresh machine: installs the pinned real peers (Python vsoa,
# npm vsoa) the interop tests drive, checks formatting and lints, runs all tests, then runs
# every benchmark scenario once in a tiny configuration (which installs Debian's
# nats-server, the NATS peer of bench/compare.sh).
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== interop peers"
interop/setup.sh
echo "== references stay inside the repository"
.ci/check-references
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
echo "== fuzz targets type-check (as cargo-fuzz builds them, with --cfg fuzzing)"
(cd fuzz && RUSTFLAGS="--cfg fuzzing" CARGO_TARGET_DIR=../target/fuzz-check cargo check --bins --locked)
echo "== cargo test"
cargo test --workspace --locked
echo "== benchmark smoke test (every scenario and peer once, tiny; nothing is measured)"
QUICK=1 bench/compare.sh 1
