#!/usr/bin/env bash
# A throwaway MariaDB server for wellhead's tests: .ci/mariadb.sh start|stop|env|clean
#
# start  installs MariaDB from Debian packages (mariadb-server) when it is missing, initialises
#        a data directory under $WELLHEAD_MYSQL_DIR (default /tmp/wellhead-mariadb), starts it on
#        127.0.0.1:$WELLHEAD_MYSQL_PORT (default 33069) and loads tests/mysql_fixtures.sql into
#        database wellhead_test (only when the fixtures changed). Idempotent; quiet unless
#        something fails.
# stop   stops the server (data is kept, so the next start is fast).
# env    prints `export WELLHEAD_TEST_MYSQL_*_DSN=...` lines: eval "$(.ci/mariadb.sh env)".
# clean  stops the server and deletes the data directory.
set -euo pipefail

DIR="${WELLHEAD_MYSQL_DIR:-/tmp/wellhead-mariadb}"
PORT="${WELLHEAD_MYSQL_PORT:-33069}"
DB=wellhead_test
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FIXTURES="$ROOT/tests/mysql_fixtures.sql"
DATA="$DIR/data"
SOCK="$DIR/mysqld.sock"
PIDFILE="$DIR/mysqld.pid"
LOG="$DIR/server.log"
# Test-only credentials for a loopback server that lives in /tmp; they guard nothing else.
ADMIN_PW=wellhead_admin_pw
RO_PW=wellhead_ro_pw
WRITER_PW=wellhead_writer_pw
FILE_PW=wellhead_file_pw

die() { echo "mariadb.sh: $*" >&2; exit 1; }

install_packages() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "mariadb.sh: installing MariaDB from Debian packages" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mariadb-server >/dev/null
}

# mariadbd refuses to run as root unless told which user: use the `mysql` OS user then.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        id mysql >/dev/null 2>&1 || useradd --system --no-create-home mysql
        runuser -u mysql -- "$@"
    else
        "$@"
    fi
}

client() {  # over the unix socket as this OS user (unix_socket auth, set up by install-db)
    local me
    me="$(id -un)"
    [ "$(id -u)" -eq 0 ] && me=root
    mariadb --no-defaults -S "$SOCK" -u "$me" --batch --skip-column-names "$@"
}

server_ok() { client -e "SELECT 1" >/dev/null 2>&1; }

wait_ok() {
    local i
    for i in $(seq 150); do server_ok && return 0; sleep 0.2; done
    return 1
}

launch() {
    # --no-defaults: nothing from /etc/mysql leaks in; every setting is here.
    as_owner /usr/sbin/mariadbd --no-defaults --datadir="$DATA" --socket="$SOCK" \
        --pid-file="$PIDFILE" --port="$PORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --log-error="$LOG" --innodb-buffer-pool-size=128M --innodb-log-file-size=64M \
        --innodb-flush-log-at-trx-commit=0 --innodb-file-per-table=0 --innodb-doublewrite=0 \
        --sync-binlog=0 --skip-log-bin \
        --max-connections=200 --table-open-cache=8000 --table-definition-cache=8000 \
        --secure-file-priv="$DIR/files" --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_general_ci >/dev/null 2>&1 &
    wait_ok
}

start() {
    command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || install_packages
    [ -x /usr/sbin/mariadbd ] || die "mariadbd not found after install"
    mkdir -p "$DIR/files"
    [ "$(id -u)" -eq 0 ] && chown -R mysql: "$DIR"
    if [ ! -d "$DATA/mysql" ]; then
        as_owner mariadb-install-db --no-defaults --datadir="$DATA" --auth-root-authentication-method=socket \
            --skip-test-db >"$DIR/install.log" 2>&1 || { cat "$DIR/install.log" >&2; die "mariadb-install-db failed"; }
    fi
    if ! server_ok; then
        rm -f "$SOCK" "$PIDFILE"
        launch || { tail -n 30 "$LOG" >&2; die "server did not start"; }
    fi
    load_fixtures
}

load_fixtures() {
    # The marker is written last: a load cut short is redone.
    local sum current
    sum="wellhead-fixtures:$(cat "$FIXTURES" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-64)"
    current="$(client -e "SELECT marker FROM wellhead_meta.fixtures" 2>/dev/null || true)"
    [ "$current" = "$sum" ] && return 0
    client <<SQL || die "creating the database failed"
DROP DATABASE IF EXISTS wellhead_meta;
DROP DATABASE IF EXISTS $DB;
CREATE DATABASE $DB;
CREATE USER IF NOT EXISTS 'wellhead_admin'@'127.0.0.1';
ALTER USER 'wellhead_admin'@'127.0.0.1' IDENTIFIED BY '$ADMIN_PW';
GRANT ALL PRIVILEGES ON *.* TO 'wellhead_admin'@'127.0.0.1' WITH GRANT OPTION;
SQL
    sed -e "s/@RO_PW@/$RO_PW/g" -e "s/@WRITER_PW@/$WRITER_PW/g" -e "s/@FILE_PW@/$FILE_PW/g" \
        "$FIXTURES" | client "$DB" >/dev/null || die "loading $FIXTURES failed"
    client -e "CREATE DATABASE wellhead_meta; CREATE TABLE wellhead_meta.fixtures (marker text);
               INSERT INTO wellhead_meta.fixtures VALUES ('$sum')" || die "writing the marker failed"
}

stop() {
    if server_ok; then
        client -e "SHUTDOWN" >/dev/null 2>&1 || true
        local i
        for i in $(seq 100); do [ -S "$SOCK" ] || [ -f "$PIDFILE" ] || return 0; server_ok || return 0; sleep 0.1; done
    fi
}

env_lines() {
    local base="127.0.0.1:$PORT/$DB"
    echo "export WELLHEAD_TEST_MYSQL_DSN=mysql://wellhead_ro:$RO_PW@$base"
    echo "export WELLHEAD_TEST_MYSQL_ADMIN_DSN=mysql://wellhead_admin:$ADMIN_PW@$base"
    echo "export WELLHEAD_TEST_MYSQL_WRITER_DSN=mysql://wellhead_writer:$WRITER_PW@$base"
    echo "export WELLHEAD_TEST_MYSQL_FILE_DSN=mysql://wellhead_file:$FILE_PW@$base"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) env_lines ;;
    clean) stop; rm -rf "$DIR" ;;
    *) die "usage: $0 start|stop|env|clean" ;;
esac
