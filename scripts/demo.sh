#!/usr/bin/env bash
# The main job: build DeltaBox and show checkpoint / rollback on a real workload (a
# Python project with its test suite, edited by a scripted "agent"), with latencies.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -q
exec python3 scripts/demo.py target/release/deltabox
