#!/usr/bin/env bash
# A throwaway Redis for wellhead's tests: .ci/redis.sh start|stop|env
# Installs redis-server from Debian packages when missing; listens on 127.0.0.1 only.
set -euo pipefail
PORT="${WELLHEAD_REDIS_PORT:-63790}"
DIR="${WELLHEAD_REDIS_DIR:-/tmp/wellhead-redis}"

case "${1:-}" in
start)
    if ! command -v redis-server >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    fi
    mkdir -p "$DIR"
    if ! redis-cli -p "$PORT" ping >/dev/null 2>&1; then
        redis-server --port "$PORT" --bind 127.0.0.1 --daemonize yes --save "" \
            --appendonly no --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log"
    fi
    for _ in $(seq 1 50); do
        redis-cli -p "$PORT" ping >/dev/null 2>&1 && exit 0
        sleep 0.1
    done
    echo "redis.sh: redis did not start; see $DIR/redis.log" >&2
    exit 1
    ;;
stop)
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
    ;;
env)
    echo "export WELLHEAD_TEST_REDIS_URL=redis://127.0.0.1:$PORT/0"
    ;;
*)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
