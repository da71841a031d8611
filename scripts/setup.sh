#!/usr/bin/env bash
# Installs what DeltaBox needs on a fresh Debian 12 machine (as root): the Rust toolchain
# is expected (rustup); this adds the system packages the layer store and tests use.
set -euo pipefail
need=()
command -v mkfs.xfs >/dev/null || need+=(xfsprogs)
command -v python3 >/dev/null || need+=(python3)
command -v mount >/dev/null || need+=(mount)
command -v git >/dev/null || need+=(git)
# The bench's workload builder: a virtualenv, and pip to fetch Django from PyPI.
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# --shell python sessions run the base's /usr/bin/python3.
[ -x /usr/bin/python3 ] || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "deltabox setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; else
    echo "deltabox setup: cargo not found; install the Rust toolchain (rustup) first" >&2; exit 1; fi
fi
if [ "$(id -u)" != 0 ]; then
  echo "deltabox setup: run as root (mounts, namespaces and ptrace need it)" >&2; exit 1
fi
# CRIU 4.1 in a private directory (optional: the bench's CRIU baseline, `deltabox doctor`).
"$(dirname "$0")/install-criu.sh" || echo "deltabox setup: CRIU not installed (optional; the bench reports it unavailable)" >&2
