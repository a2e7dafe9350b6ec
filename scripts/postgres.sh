#!/usr/bin/env bash
# A throw-away PostgreSQL 15 server for the test suite, on loopback.
#
#   scripts/postgres.sh run -- CMD...      # start, run CMD with the URL exported, stop
#   eval "$(scripts/postgres.sh start)"   # prints `export CREDITSHARE_TEST_POSTGRES_URL=...`
#   scripts/postgres.sh stop
#
# `run` does nothing but CMD when CREDITSHARE_TEST_POSTGRES_URL is already set (a server
# someone else started), so `make test` can always go through it.
#
# Uses the Debian server binaries (PG_BIN, default /usr/lib/postgresql/15/bin). PostgreSQL
# refuses to run as root, so as root the server runs as the `postgres` user (created as a
# system user if the machine has none). Data lives in CREDITSHARE_PG_DIR (default
# /tmp/creditshare-pg), which `start` wipes: never point it at data you want to keep.
# fsync is off: this server only ever holds test data.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_DIR=${CREDITSHARE_PG_DIR:-/tmp/creditshare-pg}
PG_PORT=${CREDITSHARE_PG_PORT:-55432}

if [ "$(id -u)" = 0 ]; then
    PG_USER=postgres
    if ! id "$PG_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
    fi
    run() { runuser -u "$PG_USER" -- "$@"; }
else
    PG_USER=$(id -un)
    run() { "$@"; }
fi

start_server() {
    if [ ! -x "$PG_BIN/initdb" ]; then
        echo "PostgreSQL server binaries not found in $PG_BIN (set PG_BIN)" >&2
        exit 1
    fi
    if [ -f "$PG_DIR/data/postmaster.pid" ]; then
        run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_DIR"
    mkdir -p "$PG_DIR"
    chown "$PG_USER" "$PG_DIR"
    run "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
        || { cat "$PG_DIR/initdb.log" >&2; exit 1; }
    run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400" \
        start >/dev/null || { cat "$PG_DIR/server.log" >&2; exit 1; }
    echo "export CREDITSHARE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres"
}

stop_server() {
    if [ -f "$PG_DIR/data/postmaster.pid" ]; then
        run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null
    fi
}

case "${1:-start}" in
start) start_server ;;
stop) stop_server ;;
run)
    shift
    [ "${1:-}" = "--" ] && shift
    if [ -n "${CREDITSHARE_TEST_POSTGRES_URL:-}" ]; then
        exec "$@"
    fi
    if [ ! -x "$PG_BIN/initdb" ] && [ -z "${CI:-}" ]; then
        # A developer machine without PostgreSQL: the PostgreSQL cases skip (in CI they fail).
        echo "postgres.sh: no server binaries in $PG_BIN; PostgreSQL tests will be skipped" >&2
        exec "$@"
    fi
    started="$(start_server)" || exit 1
    eval "$started"
    export CREDITSHARE_TEST_POSTGRES_URL
    trap stop_server EXIT
    "$@"
    ;;
*)
    echo "usage: $0 start|stop|run -- CMD..." >&2
    exit 2
    ;;
esac
