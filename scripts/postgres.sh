#!/usr/bin/env bash
# A throw-away PostgreSQL 15 server for the test suite, on loopback.
#
#   scripts/postgres.sh run -- CMD...      # start, run CMD with the URL exported, stop
#   eval "$(scripts/postgres.sh start)"   # exports CREDITSHARE_TEST_POSTGRES_URL and _PG_DIR
#   scripts/postgres.sh stop              # with CREDITSHARE_PG_DIR from `start`
#
# `run` does nothing but CMD when CREDITSHARE_TEST_POSTGRES_URL is already set (a server
# someone else started), so `make test` can always go through it.
#
# Uses the Debian server binaries (PG_BIN, default /usr/lib/postgresql/15/bin). PostgreSQL
# refuses to run as root, so as root the server runs as the `postgres` user (created as a
# system user if the machine has none). fsync is off: this server only ever holds test data.
#
# Several checkouts on one machine must not collide, so by default each server gets a
# folder of its own (mktemp) and a port the kernel says is free. `start` prints the URL
# and the folder; `stop` takes the folder (CREDITSHARE_PG_DIR, as `start` printed it).
# Setting CREDITSHARE_PG_DIR / CREDITSHARE_PG_PORT pins them instead (the folder is then
# wiped first: never point it at data you want to keep).
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_DIR=${CREDITSHARE_PG_DIR:-}
PG_PORT=${CREDITSHARE_PG_PORT:-}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

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
    if [ -n "$PG_DIR" ]; then
        if [ -f "$PG_DIR/data/postmaster.pid" ]; then
            run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        fi
        rm -rf "$PG_DIR"
        mkdir -p "$PG_DIR"
    else
        PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/creditshare-pg.XXXXXX")
    fi
    chown "$PG_USER" "$PG_DIR"
    run "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
        || { cat "$PG_DIR/initdb.log" >&2; exit 1; }
    # A port found free can be taken before the server binds it: try a few.
    local attempt port
    for attempt in 1 2 3 4 5; do
        port=${PG_PORT:-$(free_port)}
        if run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
            -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400" \
            start >/dev/null; then
            echo "export CREDITSHARE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
            echo "export CREDITSHARE_PG_DIR=$PG_DIR"
            return 0
        fi
        [ -n "$PG_PORT" ] && break
    done
    cat "$PG_DIR/server.log" >&2
    exit 1
}

stop_server() {
    if [ -z "$PG_DIR" ]; then
        echo "postgres.sh stop: set CREDITSHARE_PG_DIR to the folder \`start\` printed" >&2
        exit 2
    fi
    if [ -f "$PG_DIR/data/postmaster.pid" ]; then
        run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null
    fi
}

stop_and_remove() {
    stop_server
    rm -rf "$PG_DIR"
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
    pinned=$PG_DIR
    started="$(start_server)" || exit 1
    eval "$started"
    export CREDITSHARE_TEST_POSTGRES_URL
    PG_DIR=$CREDITSHARE_PG_DIR
    if [ -n "$pinned" ]; then trap stop_server EXIT; else trap stop_and_remove EXIT; fi
    "$@"
    ;;
*)
    echo "usage: $0 start|stop|run -- CMD..." >&2
    exit 2
    ;;
esac
