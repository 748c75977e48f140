#!/usr/bin/env bash
# Runs the suites that exercise real Deno against any list of Deno releases, one line per release.
#
#   scripts/deno-matrix.sh [--install-only] [VERSION...]
#
# Default VERSIONs: every release of the npm package @deno/linux-x64-glibc from 2.5.3 (the first
# with a permission broker) to the newest published, pre-releases excluded
# (`npm view @deno/linux-x64-glibc versions --json`).
#
# Each release is installed into a cache under the target directory,
# ${CARGO_TARGET_DIR:-target}/deno-matrix/deno-<version>/deno (about 100 MB each; remove the
# directory to reclaim it), from its npm tarball (`npm pack`, which checks the registry's integrity
# hash), with a private npm cache: nothing global (~/.npm, a global prefix, PATH) is touched. A
# binary is used only once it answers `--version` with its own version.
#
# The test binaries are built once (`cargo test --no-run`) and run for each release with
# PB_DENO_VERSIONS=<version> and PB_DENO_DIR=<the cache> (tests/src/lib.rs), which replace the
# pinned 2.9.6 and 2.5.3 for every test that iterates DENO_VERSIONS:
#   - deno_e2e: the whole end-to-end suite (reads, env, run, a missing broker, users, symlinks,
#     policy edits, audit and suggest);
#   - restart: Deno processes across a SIGKILLed daemon and socket activation;
#   - handover: the two tests that keep Deno processes running across upgrades in place and
#     restarts through systemd's descriptor store (the others there use no Deno).
# A few e2e tests name 2.9.6 itself (a Deno in its own pid namespace, audit then suggest): they
# run on the pinned 2.9.6 whatever the release, so scripts/install-deno.sh runs first.
#
# Prints `<version> <pass|FAIL> <passed> passed <failed> failed <seconds>s`, plus the failing
# tests and the log's path on a failure; exits 1 if any release fails. Run it as root, as the
# suites need (setpriv, unshare). Logs: ${CARGO_TARGET_DIR:-target}/deno-matrix/logs/<version>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

install_only=0
if [ "${1:-}" = "--install-only" ]; then
  install_only=1
  shift
fi

for tool in npm node cargo tar; do
  if ! command -v "$tool" >/dev/null; then
    echo "deno-matrix: $tool is needed and not on PATH (npm and node: apt-get install npm)" >&2
    exit 1
  fi
done

package="@deno/linux-x64-glibc"
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
cache="$(cd "$target_dir" && pwd)/deno-matrix"
mkdir -p "$cache/logs"

versions=("$@")
if [ "${#versions[@]}" -eq 0 ]; then
  # Stable releases only (no "-rc"/"-canary"), from 2.5.3, in version order.
  mapfile -t versions < <(
    npm view "$package" versions --json | node -e '
      const all = JSON.parse(require("fs").readFileSync(0, "utf8"));
      const key = (v) => v.split(".").map(Number);
      const cmp = (a, b) => { const x = key(a), y = key(b);
        for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i]; return 0; };
      for (const v of all.filter((v) => /^\d+\.\d+\.\d+$/.test(v) && cmp(v, "2.5.3") >= 0).sort(cmp))
        console.log(v);'
  )
  if [ "${#versions[@]}" -eq 0 ]; then
    echo "deno-matrix: npm view $package versions listed no release from 2.5.3" >&2
    exit 1
  fi
fi
for v in "${versions[@]}"; do
  if ! [[ "$v" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]]; then
    echo "deno-matrix: '$v' is not a Deno version (expected e.g. 2.6.1)" >&2
    exit 1
  fi
done

# True if the cached binary of release $1 runs and says it is that release. Never let an inherited
# broker path make the check connect to a broker.
runs_as() {
  local bin="$cache/deno-$1/deno"
  [ -x "$bin" ] && env -u DENO_PERMISSION_BROKER_PATH "$bin" --version 2>/dev/null | grep -q "^deno $1 "
}

install_release() {
  local v="$1" work
  runs_as "$v" && return 0
  work="$(mktemp -d "$cache/.install-$v.XXXXXX")"
  # A private npm cache: the download neither uses nor fills the user's ~/.npm.
  if ! npm pack "$package@$v" --pack-destination "$work" --cache "$work/npm-cache" \
    --ignore-scripts --loglevel=error >"$work/pack.log" 2>&1; then
    cat "$work/pack.log" >&2
    echo "deno-matrix: npm pack $package@$v failed (is the version published? see above; kept $work)" >&2
    return 1
  fi
  mkdir "$work/package"
  tar -xzf "$work"/deno-linux-x64-glibc-*.tgz -C "$work/package" --strip-components=1
  # @deno/linux-x64-glibc 2.7.3 and 2.7.4 ship the binary without its executable bit (mode 0644 in
  # the tarball, and the package has no `bin` entry that npm would chmod): set it on our copy.
  chmod 0755 "$work/package/deno"
  rm -rf "$cache/deno-$v"
  mv "$work/package" "$cache/deno-$v"
  rm -rf "$work"
  if ! runs_as "$v"; then
    echo "deno-matrix: $cache/deno-$v/deno does not run as Deno $v (--version):" >&2
    env -u DENO_PERMISSION_BROKER_PATH "$cache/deno-$v/deno" --version >&2 || true
    return 1
  fi
}

echo "==> installing Deno ${versions[*]} into $cache"
for v in "${versions[@]}"; do
  install_release "$v"
done
if [ "$install_only" -eq 1 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "deno-matrix: run it as root: the suites run Deno as another user (setpriv) and in its own" \
    "pid namespace (unshare), and fail without it" >&2
  exit 1
fi

# The e2e tests that name 2.9.6 run on the pinned install.
scripts/install-deno.sh

echo "==> building the test binaries once (nice -n 19)"
nice -n 19 cargo build --locked -p permission-broker --bin permission-broker
suites=(deno_e2e restart handover)
declare -A exe=()
while IFS=' ' read -r name path; do
  exe[$name]="$path"
done < <(
  nice -n 19 cargo test --locked -p permission-broker-tests "${suites[@]/#/--test=}" --no-run \
    --message-format=json | node -e '
      const lines = require("fs").readFileSync(0, "utf8").split("\n");
      for (const l of lines) {
        if (!l.startsWith("{")) continue;
        const m = JSON.parse(l);
        if (m.reason === "compiler-artifact" && m.executable && m.target.kind.includes("test"))
          console.log(m.target.name + " " + m.executable);
      }'
)
for s in "${suites[@]}"; do
  if [ -z "${exe[$s]:-}" ]; then
    echo "deno-matrix: cargo built no test executable for the $s suite" >&2
    exit 1
  fi
done
# Which tests of a suite depend on the release (the rest of handover uses no Deno).
filter_of() {
  case "$1" in
    handover) echo "deno_keeps_running_across" ;;
    *) echo "" ;;
  esac
}

echo "==> running ${suites[*]} per release"
failures=0
for v in "${versions[@]}"; do
  log="$cache/logs/$v.log"
  : >"$log"
  start=$SECONDS
  passed=0
  failed=0
  status=0
  for s in "${suites[@]}"; do
    filter="$(filter_of "$s")"
    echo "### $s (Deno $v)" >>"$log"
    # The tests' own broker build is up to date by now; CARGO tells them which cargo to use.
    PB_DENO_VERSIONS="$v" PB_DENO_DIR="$cache" CARGO="$(command -v cargo)" \
      nice -n 19 "${exe[$s]}" ${filter:+"$filter"} >>"$log" 2>&1 || status=1
  done
  elapsed=$((SECONDS - start))
  # libtest's summary lines: "test result: ok. 9 passed; 0 failed; 0 ignored; ..."
  while read -r p f; do
    passed=$((passed + p))
    failed=$((failed + f))
  done < <(sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed;.*/\1 \2/p' "$log")
  if [ "$status" -eq 0 ] && [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]; then
    printf '%-8s pass %3d passed %d failed %4ds\n' "$v" "$passed" "$failed" "$elapsed"
  else
    failures=$((failures + 1))
    names="$(sed -nE 's/^test (.*) \.\.\. FAILED$/\1/p' "$log" | paste -sd, -)"
    printf '%-8s FAIL %3d passed %d failed %4ds  failing: %s  log: %s\n' \
      "$v" "$passed" "$failed" "$elapsed" "${names:-none reported (see the log)}" "$log"
  fi
done
if [ "$failures" -ne 0 ]; then
  echo "deno-matrix: $failures of ${#versions[@]} releases failed" >&2
  exit 1
fi
echo "deno-matrix: all ${#versions[@]} releases passed"
