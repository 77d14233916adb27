#!/usr/bin/env bash
# The release as a user gets it: build the sdist and the wheel (python -m build, in an isolated
# build environment), install the wheel into a clean virtualenv outside the repo, serve the
# demo from it over HTTP, and run tests/test_release.py against that server.
#   .ci/release.sh          build, install, serve, test, stop (CI)
#   .ci/release.sh env      the variables tests/test_release.py reads
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DIR="${WELLHEAD_RELEASE_DIR:-/tmp/wellhead-release}"
PORT="${WELLHEAD_RELEASE_PORT:-18474}"

env_vars() {
    echo "export WELLHEAD_TEST_RELEASE_DIST=$DIR/dist"
    echo "export WELLHEAD_TEST_RELEASE_VENV=$DIR/venv"
    echo "export WELLHEAD_TEST_RELEASE_URL=http://127.0.0.1:$PORT"
}

if [ "${1:-all}" = env ]; then
    env_vars
    exit 0
fi

t0=$(date +%s)
rm -rf "$DIR/dist" "$DIR/venv" "$DIR/serve.log"
mkdir -p "$DIR/cache"
python -m build --sdist --wheel --outdir "$DIR/dist" "$ROOT" >"$DIR/build.log" 2>&1 || {
    cat "$DIR/build.log" >&2
    exit 1
}
t1=$(date +%s)

# A clean venv from the system interpreter, nothing of the repo's environment in it (no
# PYTHONPATH, run from /, so pip cannot mistake the source tree for an installed wellhead);
# the wheel's dependencies held to the versions CI tested.
python3 -m venv "$DIR/venv"
if ! (cd / && env -u PYTHONPATH "$DIR/venv/bin/python" -m pip install \
    --constraint "$ROOT/deploy/constraints.txt" "$DIR"/dist/wellhead-*.whl) \
    >"$DIR/install.log" 2>&1; then
    grep -v "^WARNING: Location" "$DIR/install.log" >&2
    echo "release.sh: installing the wheel failed" >&2
    exit 1
fi
t2=$(date +%s)

# Serve from a directory outside the repo so nothing but the installed wheel can be imported;
# the demo data is generated from the installed package into its own cache dir.
(
    cd /
    unset PYTHONPATH
    WELLHEAD_CACHE_DIR="$DIR/cache" FASTMCP_CHECK_FOR_UPDATES=off exec "$DIR/venv/bin/wellhead" \
        serve --transport http --host 127.0.0.1 --port "$PORT" >"$DIR/serve.log" 2>&1
) &
server=$!
stop() { kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true; }
trap stop EXIT
up=""
for _ in $(seq 1 300); do
    if python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/healthz', timeout=1)" \
        2>/dev/null; then
        up=1
        break
    fi
    kill -0 "$server" 2>/dev/null || break
    sleep 0.5
done
if [ -z "$up" ]; then
    echo "release.sh: wellhead serve from the wheel did not answer /healthz; its log:" >&2
    cat "$DIR/serve.log" >&2
    exit 1
fi
t3=$(date +%s)
eval "$(env_vars)"
python -m pytest -q tests/test_release.py
t4=$(date +%s)
echo "release.sh: build $((t1 - t0)) s, install $((t2 - t1)) s, serve $((t3 - t2)) s," \
    "tests $((t4 - t3)) s, total $((t4 - t0)) s" >&2
