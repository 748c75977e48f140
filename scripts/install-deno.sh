#!/usr/bin/env bash
# Installs the Deno releases the end-to-end tests run against: the npm packages
# @deno/linux-x64-glibc@2.9.6 and @2.5.3, pinned with their integrity hashes in
# tools/deno/package-lock.json (npm ci verifies them). Nothing else is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
# npm's download cache goes under the target directory, not the user's ~/.npm.
mkdir -p "${CARGO_TARGET_DIR:-target}/tools"
npm_cache="$(cd "${CARGO_TARGET_DIR:-target}/tools" && pwd)/npm-cache"
cd tools/deno

versions=(2.9.6 2.5.3)

installed() {
  local v
  for v in "${versions[@]}"; do
    local bin="node_modules/deno-$v/deno"
    [ -x "$bin" ] || return 1
    # Never let an inherited broker path make this check connect to a broker.
    env -u DENO_PERMISSION_BROKER_PATH "$bin" --version 2>/dev/null | grep -q "^deno $v " || return 1
  done
}

if installed; then
  echo "install-deno: Deno ${versions[*]} already installed in tools/deno/node_modules"
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "install-deno: npm is needed to install Deno from the npm registry (apt-get install npm)" >&2
  exit 1
fi
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error --cache "$npm_cache"
if ! installed; then
  echo "install-deno: Deno ${versions[*]} did not install correctly" >&2
  exit 1
fi
echo "install-deno: installed Deno ${versions[*]} in tools/deno/node_modules"
