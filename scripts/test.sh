#!/usr/bin/env bash
# Runs every test (as root): formatting, lints, unit tests, and the privileged
# integration tests (real overlayfs mounts, namespaces, daemon crash/restart).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked -- --test-threads=2
