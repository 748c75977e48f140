#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs the pinned Deno releases, then checks
# formatting and lints and runs every test (unit, integration, and end-to-end with real Deno).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deno.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
