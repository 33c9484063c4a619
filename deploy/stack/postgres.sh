# PostgreSQL 15 + TimescaleDB: our own cluster in $STACK_DIR/pg, never the system 15/main.
# Sourced by stack.sh.
# shellcheck shell=bash

PG_MAJOR=15
PG_BIN=${INGESTD_PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
PG_PORT=${INGESTD_PG_PORT:-5432}
PG_DATA=$STACK_DIR/pg
PG_LOGS=$STACK_DIR/pg-logs
PG_LOG=$PG_LOGS/postgresql.log
PG_SOCK_DIR=$STACK_DIR/run/postgres   # /var/run/postgresql may not exist without the system service

pg_up() {
  check_port_value postgres "$PG_PORT"
  ensure_pkgs postgres "postgresql-$PG_MAJOR"
  [[ -x $PG_BIN/pg_ctl ]] || die postgres "no PostgreSQL $PG_MAJOR server in $PG_BIN"
  ts_ensure_installed
  pg_init_cluster
  pg_start_or_keep
  pg_provision
}

# Trailing space: /proc cmdline args are joined with spaces, so ".../pg2" does not match.
pg_pid() { live_pid "$PG_DATA/postmaster.pid" "-D $PG_DATA "; }

# The port the running server really listens on (line 4 of postmaster.pid), else the configured one.
pg_port() {
  local port=''
  pg_pid >/dev/null && port=$(sed -n 4p "$PG_DATA/postmaster.pid")
  echo "${port:-$PG_PORT}"
}

# Ask our server, as the trusted superuser over TCP. Usage: pg_sql DB SQL...
pg_sql() {
  local db=$1
  shift
  PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(pg_port)" -U postgres -d "$db" "$@"
}

# initdb into a temporary directory and rename it, so a failed initdb never leaves a
# data directory that later runs would take for a valid cluster.
pg_init_cluster() {
  install -d -m 755 "$STACK_DIR" "$STACK_DIR/run"
  install -d -o postgres -g postgres -m 755 "$PG_LOGS" "$PG_SOCK_DIR"
  [[ -f $PG_DATA/PG_VERSION ]] && return 0
  log postgres "creating the cluster in $PG_DATA (initdb)"
  rm -rf "$PG_DATA.init"
  install -d -o postgres -g postgres -m 700 "$PG_DATA.init"
  # PostgreSQL refuses to run as root, hence initdb as the postgres user; trust is for local dev.
  run_logged postgres "$LOG_DIR/initdb.log" "initdb failed" \
    as_user postgres "$PG_BIN/initdb" -D "$PG_DATA.init" -U postgres --auth=trust \
    --encoding=UTF8 --locale=C.UTF-8
  echo "include_if_exists = 'ingestd.conf'   # written by deploy/stack/postgres.sh" \
    >>"$PG_DATA.init/postgresql.conf"
  mv "$PG_DATA.init" "$PG_DATA"
}

# Our settings live in ingestd.conf (included last by postgresql.conf) and are rewritten on
# every run, so changing INGESTD_PG_PORT or this file takes effect on the next `up`.
pg_config_text() {
  cat <<EOF
# Written by deploy/stack/postgres.sh on every run; edits here are overwritten.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK_DIR'
max_connections = 200
shared_buffers = 256MB
max_locks_per_transaction = 256
synchronous_commit = on
fsync = on
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
# Every test database with the extension runs a TimescaleDB scheduler worker; leave room.
timescaledb.max_background_workers = 16
max_worker_processes = 32
EOF
}

pg_write_config() {
  write_if_changed "$PG_DATA/ingestd.conf" "$(pg_config_text)" || return 1
  chown postgres:postgres "$PG_DATA/ingestd.conf"
}

pg_ready() { pg_sql postgres -c 'SELECT 1' >/dev/null 2>&1; }

# Keep a running server unless its config changed; one that is still starting or
# recovering gets a minute to answer (never a restart in the middle of recovery).
pg_start_or_keep() {
  local changed=0
  pg_write_config && changed=1
  if pg_pid >/dev/null && ((changed)); then
    log postgres "configuration changed, restarting"
    pg_stop
  elif pg_pid >/dev/null; then
    wait_for 60 pg_ready || { show_tail "$PG_LOG"; die postgres "running but not answering on 127.0.0.1:$(pg_port) (log: $PG_LOG)"; }
    log postgres "already running on 127.0.0.1:$(pg_port)"
    return 0
  fi
  pg_start
}

pg_start() {
  require_free_port postgres "$PG_PORT" INGESTD_PG_PORT
  log postgres "starting on 127.0.0.1:$PG_PORT"
  local ctl_log=$PG_LOGS/pg_ctl.log
  if ! as_user postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 90 start >"$ctl_log" 2>&1 </dev/null; then
    show_tail "$ctl_log" "$PG_LOG"
    die postgres "server did not start (log: $PG_LOG)"
  fi
}

pg_stop() {
  if ! pg_pid >/dev/null; then
    log postgres "not running"
    return 0
  fi
  log postgres "stopping"
  local ctl_log=$PG_LOGS/pg_ctl.log
  as_user postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >"$ctl_log" 2>&1 && return 0
  # A fast shutdown can hang on a stuck client; immediate is crash-safe (WAL replay on start).
  log postgres "fast shutdown timed out, using immediate"
  as_user postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >>"$ctl_log" 2>&1 ||
    { show_tail "$ctl_log"; die postgres "server does not stop"; }
}

# Role and database for the app; ALTERs are re-run so a hand-edited role gets fixed too.
pg_provision_sql() {
  cat <<'EOF'
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ingestd') THEN
    CREATE ROLE ingestd;
  END IF;
END$$;
ALTER ROLE ingestd LOGIN CREATEDB PASSWORD 'ingestd';
-- The writers' least-privilege login (docs/security.md): a member of the ingest role, which
-- `ingestd schema apply` (as the owner ingestd) grants exactly what the writers need.
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ingestd_ingest') THEN
    CREATE ROLE ingestd_ingest NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ingestd_writer') THEN
    CREATE ROLE ingestd_writer;
  END IF;
END$$;
ALTER ROLE ingestd_writer LOGIN NOCREATEDB NOCREATEROLE PASSWORD 'ingestd_writer';
GRANT ingestd_ingest TO ingestd_writer;
SELECT 'CREATE DATABASE deep_eyes OWNER ingestd'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'deep_eyes')\gexec
ALTER DATABASE deep_eyes OWNER TO ingestd;
EOF
}

pg_provision() {
  local out
  out=$(pg_provision_sql | pg_sql postgres 2>&1) || { echo "$out" >&2; die postgres "creating roles ingestd, ingestd_writer / database deep_eyes failed"; }
  [[ -n $(pg_ts_default_version) ]] ||
    die postgres "extension timescaledb is not available to the server (pg_available_extensions)"
  log postgres "database deep_eyes, owner ingestd and writer ingestd_writer ready"
}

pg_ts_default_version() {
  pg_sql postgres -c "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
}

pg_version() { pg_sql postgres -c 'SHOW server_version'; }

# "2.19.3 (license: apache)". timescaledb.license is defined by the versioned library, which
# the preloaded loader only pulls into a backend once the extension exists in its database,
# so create it in a transaction that is rolled back: nothing is left behind.
pg_ts_license() {
  pg_sql postgres <<'EOF'
BEGIN;
SET LOCAL client_min_messages = error;
CREATE EXTENSION IF NOT EXISTS timescaledb;
SHOW timescaledb.license;
ROLLBACK;
EOF
}

pg_ts_version() { echo "$(pg_ts_default_version) (license: $(pg_ts_license))"; }
