#!/usr/bin/env bash
# Fuzzes the protocol and policy parsers with cargo-fuzz (libFuzzer, nightly toolchain).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]     default: 10 s each of frame policy path host
#
# The test command runs it for a few seconds per target (a smoke run); long runs are documented
# in BENCHMARKS.md. Seeds are in fuzz/corpus/<target> (real Deno frames, config/ policies, paths
# and hosts); what a run discovers goes to a temporary directory, so the repository is untouched.
# A crash fails the script and leaves its input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-10}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(frame policy path host)
fi

# cargo-fuzz, if not installed already, goes under the target directory (not ~/.cargo/bin):
# cargo finds `cargo fuzz` as cargo-fuzz on PATH.
tools="$(mkdir -p "${CARGO_TARGET_DIR:-target}/tools" && cd "${CARGO_TARGET_DIR:-target}/tools" && pwd)"
export PATH="$tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz 0.13.2 from crates.io into $tools/bin"
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$tools"
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz needs a nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "$work/$target"
  echo "fuzzing $target for ${seconds}s"
  status=0
  cargo +nightly fuzz run "$target" "$work/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    >"$work/$target.log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|Done )" "$work/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$work/$target.log" >&2
    echo "fuzz target $target failed (exit $status); a crashing input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
