#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for wellhead's tests: .ci/postgres.sh start|stop|env|clean
#
# start  installs PostgreSQL from Debian packages when it is missing, initialises a cluster
#        under $WELLHEAD_PG_DIR (default /tmp/wellhead-pg), starts it on 127.0.0.1:$WELLHEAD_PG_PORT
#        (default 54329) and loads tests/pg_fixtures.sql into database wellhead_test (only when
#        the fixtures changed). Idempotent; quiet unless something fails.
# stop   stops the server (data is kept, so the next start is fast).
# env    prints `export WELLHEAD_TEST_PG_*_DSN=...` lines: eval "$(.ci/postgres.sh env)".
# clean  stops the server and deletes the cluster.
set -euo pipefail

PGDIR="${WELLHEAD_PG_DIR:-/tmp/wellhead-pg}"
PORT="${WELLHEAD_PG_PORT:-54329}"
DB=wellhead_test
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FIXTURES="$ROOT/tests/pg_fixtures.sql"
DATA="$PGDIR/data"
LOG="$PGDIR/server.log"
# Test-only credentials for a loopback cluster that lives in /tmp; they guard nothing else.
ADMIN_PW=wellhead_admin_pw
RO_PW=wellhead_ro_pw
WRITER_PW=wellhead_writer_pw

die() { echo "postgres.sh: $*" >&2; exit 1; }

find_bindir() {
    local d
    if command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
    done
    return 1
}

install_packages() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "postgres.sh: installing PostgreSQL from Debian packages" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
}

# initdb and postgres refuse to run as root: use the `postgres` OS user then.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

BIN="$(find_bindir || true)"

psql_admin() {  # psql over the unix socket as the cluster superuser (trust, local only)
    as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGDIR" -p "$PORT" -U postgres "$@"
}

is_running() {
    [ -n "$BIN" ] && [ -f "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

server_ok() { psql_admin -d postgres -tAc "select 1" >/dev/null 2>&1; }

wait_ok() {
    local i
    for i in $(seq 100); do server_ok && return 0; sleep 0.3; done
    return 1
}

stale_pid() {
    local pid
    pid="$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null)" || return 1
    [ -n "$pid" ] || return 1
    ! kill -0 "$pid" 2>/dev/null || grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

launch() {
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null 2>&1 && wait_ok
}

start() {
    if [ -z "$BIN" ]; then
        install_packages
        BIN="$(find_bindir)" || die "PostgreSQL binaries not found after install"
    fi
    mkdir -p "$PGDIR"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$PGDIR"
    if [ ! -f "$DATA/PG_VERSION" ]; then
        as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
            --no-sync -E UTF8 --locale=C.UTF-8 >"$PGDIR/initdb.log" 2>&1 \
            || { cat "$PGDIR/initdb.log" >&2; die "initdb failed"; }
        cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PGDIR'
max_connections = 100
fsync = off
full_page_writes = off
CONF
    fi
    if ! server_ok; then
        # A server killed with its session can leave a postmaster.pid behind (its pid dead or a
        # zombie no one reaped): postgres would refuse to start over it.
        if stale_pid; then rm -f "$DATA/postmaster.pid"; fi
        if is_running; then
            wait_ok || { tail -n 30 "$LOG" >&2; die "server is running but not answering"; }
        else
            launch || { sleep 3; launch; } || { tail -n 30 "$LOG" >&2; die "server did not start"; }
        fi
    fi
    load_fixtures
}

load_fixtures() {
    # The marker lives in the database itself, written last: a load cut short is redone.
    local sum current
    sum="wellhead-fixtures:$(cat "$FIXTURES" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-64)"
    current="$(psql_admin -d postgres -tAc \
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '$DB'" \
        2>/dev/null || true)"
    [ "$current" = "$sum" ] && return 0
    psql_admin -d postgres <<SQL >/dev/null
SET client_min_messages = warning;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wellhead_admin') THEN
    CREATE ROLE wellhead_admin LOGIN SUPERUSER;
  END IF;
END \$\$;
ALTER ROLE wellhead_admin PASSWORD '$ADMIN_PW';
DROP DATABASE IF EXISTS $DB WITH (FORCE);
CREATE DATABASE $DB OWNER wellhead_admin;
SQL
    psql_admin -d "$DB" -v ro_pw="$RO_PW" -v writer_pw="$WRITER_PW" -v db="$DB" \
        <"$FIXTURES" >/dev/null || die "loading $FIXTURES failed"
    psql_admin -d postgres -c "COMMENT ON DATABASE $DB IS '$sum'; CHECKPOINT" >/dev/null
}

stop() {
    if is_running; then
        as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    fi
}

env_lines() {
    local base="127.0.0.1:$PORT/$DB"
    echo "export WELLHEAD_TEST_PG_DSN=postgresql://wellhead_ro:$RO_PW@$base"
    echo "export WELLHEAD_TEST_PG_ADMIN_DSN=postgresql://wellhead_admin:$ADMIN_PW@$base"
    echo "export WELLHEAD_TEST_PG_WRITER_DSN=postgresql://wellhead_writer:$WRITER_PW@$base"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) env_lines ;;
    clean) stop; rm -rf "$PGDIR" ;;
    *) die "usage: $0 start|stop|env|clean" ;;
esac
