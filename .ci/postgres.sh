#!/usr/bin/env bash
# Throwaway PostgreSQL server for the test suite.
#
#   bash .ci/postgres.sh install      # root only: apt-get install postgresql, if no server binaries are found
#   eval "$(bash .ci/postgres.sh start)"
#   python -m pytest -m postgres
#   bash .ci/postgres.sh stop         # uses $BATCHRAY_TEST_PG_DATA (or: stop DATADIR)
#   bash .ci/postgres.sh status       # same
#
# `start` creates a fresh temporary folder holding the data directory, the Unix socket and the
# server log, picks a free TCP port on 127.0.0.1, runs initdb with max_prepared_transactions=64,
# starts the server, creates the role `batchray` (password login over TCP) and the database
# `batchray_test`, and prints `export NAME=value` lines on stdout (everything else goes to stderr):
#
#   BATCHRAY_TEST_PG_DSN      postgresql://batchray:PASSWORD@127.0.0.1:PORT/batchray_test
#   BATCHRAY_TEST_PG_BIN      folder holding pg_ctl, postgres, initdb
#   BATCHRAY_TEST_PG_DATA     data directory (pg_ctl -D)
#   BATCHRAY_TEST_PG_LOG      server log (every start writes there, however it was started)
#   BATCHRAY_TEST_PG_OS_USER  operating-system user that owns the data directory and must run pg_ctl
#   BATCHRAY_TEST_PG_HOST, BATCHRAY_TEST_PG_PORT, BATCHRAY_TEST_PG_SOCKET_DIR
#   BATCHRAY_TEST_PG_ADMIN_DSN  superuser `postgres` over the Unix socket (the socket folder is
#                               private to BATCHRAY_TEST_PG_OS_USER; root can use it too)
# The same lines are kept in env.sh next to the data directory.
#
# PostgreSQL refuses to run as root: when this script runs as root, the server belongs to the
# `postgres` user (created if missing) and every pg_ctl call must run as that user, e.g.
#   runuser -u "$BATCHRAY_TEST_PG_OS_USER" -- "$BATCHRAY_TEST_PG_BIN/pg_ctl" -D "$BATCHRAY_TEST_PG_DATA" -w stop -m immediate
#   runuser -u "$BATCHRAY_TEST_PG_OS_USER" -- "$BATCHRAY_TEST_PG_BIN/pg_ctl" -D "$BATCHRAY_TEST_PG_DATA" -l "$BATCHRAY_TEST_PG_LOG" -w start
# Run as an ordinary user, the server belongs to that user and pg_ctl needs no wrapper.
# All settings live in the data directory's configuration, so `pg_ctl start` brings the server
# back on the same port and socket. Always pass `-l "$BATCHRAY_TEST_PG_LOG"` to `pg_ctl start`:
# without -l the server's processes keep pg_ctl's stdout and stderr open, so a caller that
# captures them (subprocess.run(..., capture_output=True)) waits until the server stops.
#
# Inputs (optional): BATCHRAY_TEST_PG_BIN (use these binaries), BATCHRAY_TEST_PG_TMPDIR (parent of
# the temporary folder; default $TMPDIR or /tmp), BATCHRAY_TEST_PG_KEEP=1 (`stop` keeps the folder).
set -euo pipefail

PG_ROLE=batchray
PG_DB=batchray_test
PG_MAX_PREPARED=64
MARKER=.batchray-test-postgres

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# bin folder holding initdb, pg_ctl and postgres, or nothing.
find_pg_bin() {
    local cand exe
    if [ -n "${BATCHRAY_TEST_PG_BIN:-}" ]; then
        printf '%s\n' "$BATCHRAY_TEST_PG_BIN"
        return 0
    fi
    # On PATH (resolving symbolic links to the real installation folder).
    if exe=$(command -v pg_ctl 2>/dev/null); then
        cand=$(dirname "$(readlink -f "$exe")")
        if [ -x "$cand/initdb" ] && [ -x "$cand/postgres" ]; then
            printf '%s\n' "$cand"
            return 0
        fi
    fi
    # Debian and Ubuntu keep the server binaries off PATH; take the newest major version.
    for cand in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        if [ -x "$cand/pg_ctl" ] && [ -x "$cand/initdb" ] && [ -x "$cand/postgres" ]; then
            printf '%s\n' "$cand"
            return 0
        fi
    done
    return 1
}

cmd_install() {
    local bin
    if bin=$(find_pg_bin); then
        log "PostgreSQL server binaries found in $bin"
        return 0
    fi
    is_root || die "PostgreSQL server binaries not found (looked on PATH and in /usr/lib/postgresql/*/bin); install the server package, or set BATCHRAY_TEST_PG_BIN"
    command -v apt-get >/dev/null || die "PostgreSQL server binaries not found and apt-get is not available"
    log "PostgreSQL server binaries not found; installing the postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    # The package would create and start a system-wide cluster; the tests use their own server,
    # so keep services from starting during the installation (policy-rc.d, exit status 101).
    local policy=/usr/sbin/policy-rc.d rc=0
    if [ ! -e "$policy" ]; then
        # shellcheck disable=SC2064
        trap "rm -f '$policy'" EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
        printf '#!/bin/sh\n# Temporary, written by .ci/postgres.sh install\nexit 101\n' >"$policy"
        chmod 755 "$policy"
    fi
    apt-get update >&2 || rc=$?
    [ "$rc" -eq 0 ] && { apt-get install -y postgresql >&2 || rc=$?; }
    [ "$rc" -eq 0 ] || die "apt-get failed (exit status $rc)"
    bin=$(find_pg_bin) || die "postgresql was installed but no server binaries were found"
    log "PostgreSQL server binaries installed in $bin"
}

# Run a command as the given user; a plain call when that is the current user.
run_as() {
    local user=$1
    shift
    if [ "$user" = "$(id -un)" ]; then
        (cd / && "$@")
    elif command -v runuser >/dev/null; then
        (cd / && runuser -u "$user" -- "$@")
    else
        # shellcheck disable=SC2016
        (cd / && su -s /bin/sh -c '"$0" "$@"' "$user" "$@")
    fi
}

free_port() {
    "${PYTHON:-python3}" - <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# export NAME='value', quoted for sh
export_line() {
    local q="'\\''"
    printf "export %s='%s'\n" "$1" "${2//\'/$q}"
}

random_password() {
    "${PYTHON:-python3}" -c 'import secrets; print(secrets.token_hex(16))'
}

# State shared with the failure handler of cmd_start.
START_BASE=
START_DATA=
START_OWNER=
START_BIN=
START_OK=0

start_failed() {
    local rc=$?
    [ "$START_OK" = 1 ] && return 0
    if [ -n "$START_DATA" ] && [ -f "$START_DATA/postmaster.pid" ]; then
        run_as "$START_OWNER" "$START_BIN/pg_ctl" -D "$START_DATA" stop -m immediate >&2 || true
    fi
    if [ -n "$START_BASE" ]; then
        if [ -f "$START_BASE/log/postgresql.log" ]; then
            log "server log:"
            tail -n 50 "$START_BASE/log/postgresql.log" >&2 || true
        fi
        rm -rf -- "$START_BASE"
    fi
    log "start failed (exit status $rc)"
    exit "$rc"
}

cmd_start() {
    local bin owner parent base data sock port password psql attempt started
    bin=$(find_pg_bin) || die "PostgreSQL server binaries not found (looked on PATH and in /usr/lib/postgresql/*/bin); run 'bash .ci/postgres.sh install' as root, or set BATCHRAY_TEST_PG_BIN"
    bin=$(readlink -f "$bin")
    for exe in initdb pg_ctl postgres; do
        [ -x "$bin/$exe" ] || die "$bin/$exe not found"
    done
    if [ -x "$bin/psql" ]; then
        psql="$bin/psql"
    else
        psql=$(command -v psql) || die "psql not found in $bin nor on PATH"
    fi

    if is_root; then
        owner=postgres
        if ! id -u "$owner" >/dev/null 2>&1; then
            log "creating the system user $owner"
            useradd --system --user-group --home-dir /nonexistent --no-create-home \
                --shell /usr/sbin/nologin "$owner"
        fi
    else
        owner=$(id -un)
    fi

    trap start_failed EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP

    parent=${BATCHRAY_TEST_PG_TMPDIR:-${TMPDIR:-/tmp}}
    base=$(mktemp -d "$parent/batchray-pg.XXXXXX")
    START_BASE=$base
    touch "$base/$MARKER"
    mkdir "$base/log"
    chown -R "$owner:" "$base"
    chmod 700 "$base"
    START_OWNER=$owner
    START_BIN=$bin
    run_as "$owner" test -w "$base" ||
        die "$owner cannot write to $base; set BATCHRAY_TEST_PG_TMPDIR to a folder it can reach"
    data=$base/data
    sock=$base
    # A Unix socket path is limited to 107 bytes: $sock/.s.PGSQL.NNNNN
    [ "${#sock}" -le 90 ] || die "$sock is too long for a Unix socket path; set BATCHRAY_TEST_PG_TMPDIR to a shorter folder"

    log "initdb ($bin/initdb) into $data as $owner"
    run_as "$owner" "$bin/initdb" -D "$data" -U postgres --encoding=UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 >"$base/log/initdb.log" 2>&1 ||
        { cat "$base/log/initdb.log" >&2; die "initdb failed"; }
    START_DATA=$data

    cat >"$data/pg_hba.conf" <<EOF
# Throwaway test server: trust on the private Unix socket, passwords over TCP on loopback only.
local   all   all                  trust
host    all   all   127.0.0.1/32   scram-sha-256
EOF
    printf "\ninclude 'batchray_test.conf'\n" >>"$data/postgresql.conf"

    started=0
    for attempt in 1 2 3; do
        port=$(free_port)
        cat >"$data/batchray_test.conf" <<EOF
# Written by .ci/postgres.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
max_prepared_transactions = $PG_MAX_PREPARED
max_connections = 200
logging_collector = on
log_directory = '$base/log'
log_filename = 'postgresql.log'
log_file_mode = 0640
log_rotation_age = 0
log_rotation_size = 0
log_line_prefix = '%m [%p] %q%u@%d '
EOF
        chown "$owner:" "$data/batchray_test.conf" "$data/pg_hba.conf"
        log "starting the server on 127.0.0.1:$port and socket folder $sock (attempt $attempt)"
        if run_as "$owner" "$bin/pg_ctl" -D "$data" -l "$base/log/postgresql.log" -w -t 60 start >&2; then
            started=1
            break
        fi
        tail -n 10 "$base/log/postgresql.log" >&2 || true
    done
    [ "$started" = 1 ] || die "the server did not start"

    password=$(random_password)
    PGCONNECT_TIMEOUT=10 "$psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres >&2 <<EOF
CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$password';
GRANT pg_signal_backend, pg_monitor TO $PG_ROLE;
CREATE DATABASE $PG_DB OWNER $PG_ROLE;
EOF
    "$psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d "$PG_DB" >&2 <<EOF
ALTER SCHEMA public OWNER TO $PG_ROLE;
EOF

    local dsn="postgresql://$PG_ROLE:$password@127.0.0.1:$port/$PG_DB"
    local admin_dsn="postgresql://postgres@/postgres?host=$sock&port=$port"
    {
        export_line BATCHRAY_TEST_PG_DSN "$dsn"
        export_line BATCHRAY_TEST_PG_ADMIN_DSN "$admin_dsn"
        export_line BATCHRAY_TEST_PG_BIN "$bin"
        export_line BATCHRAY_TEST_PG_DATA "$data"
        export_line BATCHRAY_TEST_PG_LOG "$base/log/postgresql.log"
        export_line BATCHRAY_TEST_PG_OS_USER "$owner"
        export_line BATCHRAY_TEST_PG_HOST 127.0.0.1
        export_line BATCHRAY_TEST_PG_PORT "$port"
        export_line BATCHRAY_TEST_PG_SOCKET_DIR "$sock"
    } >"$base/env.sh"

    START_OK=1
    trap - EXIT INT TERM HUP
    log "server ready: $("$bin/postgres" --version), data $data, log $base/log/postgresql.log"
    cat "$base/env.sh"
}

# data directory from the argument or $BATCHRAY_TEST_PG_DATA
resolve_data() {
    local data=${1:-${BATCHRAY_TEST_PG_DATA:-}}
    [ -n "$data" ] || die "no data directory: pass it as an argument or set BATCHRAY_TEST_PG_DATA"
    printf '%s\n' "$data"
}

resolve_bin() {
    local data=$1 bin
    if [ -n "${BATCHRAY_TEST_PG_BIN:-}" ]; then
        printf '%s\n' "$BATCHRAY_TEST_PG_BIN"
        return 0
    fi
    # A data directory records its major version; prefer the matching Debian folder.
    if [ -f "$data/PG_VERSION" ]; then
        bin=/usr/lib/postgresql/$(cat "$data/PG_VERSION")/bin
        if [ -x "$bin/pg_ctl" ]; then
            printf '%s\n' "$bin"
            return 0
        fi
    fi
    find_pg_bin || die "pg_ctl not found; set BATCHRAY_TEST_PG_BIN"
}

cmd_status() {
    local data bin owner
    data=$(resolve_data "${1:-}")
    [ -d "$data" ] || die "$data does not exist"
    bin=$(resolve_bin "$data")
    owner=$(stat -c %U "$data")
    run_as "$owner" "$bin/pg_ctl" -D "$data" status
}

cmd_stop() {
    local data bin owner base rc=0
    data=$(resolve_data "${1:-}")
    data=${data%/}
    base=$(dirname "$data")
    if [ ! -d "$data" ]; then
        log "$data does not exist; nothing to stop"
        return 0
    fi
    bin=$(resolve_bin "$data")
    owner=$(stat -c %U "$data")
    if run_as "$owner" "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        log "stopping the server in $data"
        if ! run_as "$owner" "$bin/pg_ctl" -D "$data" -w -t 60 stop -m fast >&2; then
            log "fast shutdown failed; stopping with -m immediate"
            run_as "$owner" "$bin/pg_ctl" -D "$data" -w -t 60 stop -m immediate >&2 || rc=$?
        fi
    else
        log "no server running in $data"
    fi
    if [ "$rc" -ne 0 ]; then
        log "error: the server in $data could not be stopped; leaving $base in place"
        return "$rc"
    fi
    if [ "${BATCHRAY_TEST_PG_KEEP:-0}" = 1 ]; then
        log "keeping $base (BATCHRAY_TEST_PG_KEEP=1)"
    elif [ -f "$base/$MARKER" ]; then
        rm -rf -- "$base"
        log "removed $base"
    else
        log "$base was not created by this script; leaving it in place"
    fi
}

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop "${2:-}" ;;
    status) cmd_status "${2:-}" ;;
    *) usage ;;
esac
