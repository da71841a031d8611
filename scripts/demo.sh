#!/usr/bin/env bash
# The main job: build DeltaBox, then tree search over a coding agent's trajectory on
# Django (from PyPI): a scripted policy proposes fixes to injected bugs, the search runs
# Django's tests, rolls back failures (files and shell) and finds the fix, with latencies.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -q
bin=$PWD/target/release/deltabox
work=/var/tmp/deltabox-demo
mkdir -p "$work"
echo "preparing the workload (first run: ~3 min to fetch Django releases and its test requirements from PyPI)..."
"$bin" --json bench --workload-only > "$work/workload.json"
[ -x "$work/venv/bin/python" ] || python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q ./python
# A private daemon for the demo (the SDK starts it), stopped at the end.
export DELTABOX_BIN=$bin DELTABOX_SOCKET=/run/deltabox-demo/d.sock DELTABOX_ROOT=/var/lib/deltabox-demo
export DELTABOX_LOG=$work/daemon.log
stop_daemon() {
  "$work/venv/bin/python" -c 'import os, signal, deltabox
os.kill(deltabox.Client(start=False).health()["pid"], signal.SIGTERM)' 2>/dev/null || true
}
stop_daemon
trap stop_daemon EXIT
"$work/venv/bin/python" scripts/demo.py "$work/workload.json"
