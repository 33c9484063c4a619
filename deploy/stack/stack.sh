#!/usr/bin/env bash
# Local dev stack for ingestd: PostgreSQL 15 + TimescaleDB, Redis, Elasticsearch, installed
# on first use and run from /var/lib/ingestd-stack (no systemd, no containers).
#
#   stack.sh up                 install what is missing, start all three (idempotent), write .stack/env
#   stack.sh down               stop what `up` started (by pid file)
#   stack.sh status             running/stopped, port and version of each server
#   stack.sh start|stop SERVER  one server: postgres | redis | elasticsearch (used by outage tests)
#
# Environment: INGESTD_STACK_DIR, INGESTD_CACHE_DIR, INGESTD_PG_PORT, INGESTD_REDIS_PORT,
# INGESTD_ES_PORT, INGESTD_ES_TRANSPORT_PORT, INGESTD_ES_VERSION, INGESTD_ES_HEAP.
set -Eeuo pipefail

STACK_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/stack/lib.sh
. "$STACK_HOME/lib.sh"
# shellcheck source=deploy/apt_mirror.sh
. "$STACK_HOME/../apt_mirror.sh"
# shellcheck source=deploy/stack/timescaledb.sh
. "$STACK_HOME/timescaledb.sh"
# shellcheck source=deploy/stack/postgres.sh
. "$STACK_HOME/postgres.sh"
# shellcheck source=deploy/stack/redis.sh
. "$STACK_HOME/redis.sh"
# shellcheck source=deploy/stack/elasticsearch.sh
. "$STACK_HOME/elasticsearch.sh"

SERVERS=(postgres redis elasticsearch)   # start order; stopped in reverse
REPO_ROOT=$(cd "$STACK_HOME/../.." && pwd)
ENV_FILE=$REPO_ROOT/.stack/env           # .stack/ is git-ignored

# Anything failing outside an explicit check still ends with one "stack: ..." line.
# Only the top-level shell reports, so a failing $(...) is not reported twice.
on_error() {
  ((BASH_SUBSHELL == 0)) || return 0
  printf 'stack: %s: unexpected failure (%s: %s)\n' "${CURRENT:-stack}" "$1" "$2" >&2
}
trap 'on_error "${BASH_SOURCE[0]##*/}:$LINENO" "$BASH_COMMAND"' ERR

# Map a server name to its function prefix.
prefix() {
  case $1 in
    postgres) echo pg ;;
    redis) echo redis ;;
    elasticsearch) echo es ;;
    *) die usage "unknown server '$1' (expected: ${SERVERS[*]})" ;;
  esac
}

server_up() {
  CURRENT=$1
  "$(prefix "$1")_up"
}

server_stop() {
  CURRENT=$1
  "$(prefix "$1")_stop"
}

write_env() {
  mkdir -p "$(dirname "$ENV_FILE")"
  cat >"$ENV_FILE.tmp" <<EOF
# Written by deploy/stack/stack.sh up; load with: set -a; . .stack/env; set +a
INGESTD_PG_DSN=postgresql://ingestd:ingestd@127.0.0.1:$PG_PORT/deep_eyes
# The writers' least-privilege login (member of ingestd_ingest; docs/security.md).
INGESTD_PG_INGEST_DSN=postgresql://ingestd_writer:ingestd_writer@127.0.0.1:$PG_PORT/deep_eyes
INGESTD_PG_ADMIN_DSN=postgresql://postgres@127.0.0.1:$PG_PORT/postgres
INGESTD_ES_URL=http://127.0.0.1:$ES_PORT
INGESTD_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
INGESTD_STACK_DIR=$STACK_DIR
INGESTD_PG_BIN=$PG_BIN
INGESTD_PG_DATA=$PG_DATA
INGESTD_STACK_SCRIPT=$STACK_HOME/stack.sh
# So that \$INGESTD_STACK_SCRIPT start ... run with this env keeps the same ports.
INGESTD_PG_PORT=$PG_PORT
INGESTD_REDIS_PORT=$REDIS_PORT
INGESTD_ES_PORT=$ES_PORT
INGESTD_ES_TRANSPORT_PORT=$ES_TRANSPORT_PORT
INGESTD_ES_VERSION=$ES_VERSION
EOF
  mv -f "$ENV_FILE.tmp" "$ENV_FILE"
}

print_versions() {
  printf '%-14s %s on 127.0.0.1:%s\n' PostgreSQL "$(pg_version)" "$(pg_port)"
  printf '%-14s %s\n' TimescaleDB "$(pg_ts_version)"
  printf '%-14s %s on 127.0.0.1:%s\n' Elasticsearch "$(es_version)" "$(es_port)"
  printf '%-14s %s on 127.0.0.1:%s\n' Redis "$(redis_version)" "$(redis_port)"
}

cmd_up() {
  CURRENT=up
  require_root up
  take_lock
  local s
  for s in "${SERVERS[@]}"; do server_up "$s"; done
  CURRENT=up   # server_up set it to each server's name
  # tests/integration/test_alerts.py runs its own Alertmanager from this package's binary;
  # the package's system service is never used.
  ensure_pkgs up prometheus-alertmanager
  write_env
  log up "all servers answer; environment written to $ENV_FILE"
  print_versions
}

cmd_down() {
  CURRENT=down
  require_root down
  take_lock
  local i
  for ((i = ${#SERVERS[@]} - 1; i >= 0; i--)); do server_stop "${SERVERS[i]}"; done
}

cmd_start() {
  CURRENT=$1
  require_root "$1"
  prefix "$1" >/dev/null
  take_lock
  server_up "$1"
  write_env
}

cmd_stop() {
  CURRENT=$1
  require_root "$1"
  prefix "$1" >/dev/null
  take_lock
  server_stop "$1"
}

# What a running server says about itself; empty when it does not answer.
describe() {
  case $1 in
    postgres) pg_version >/dev/null 2>&1 && echo "PostgreSQL $(pg_version), TimescaleDB $(pg_ts_version 2>/dev/null)" ;;
    redis) redis_ping && echo "Redis $(redis_version)" ;;
    elasticsearch) es_healthy && echo "Elasticsearch $(es_version)" ;;
  esac
}

# One line per server; versions are asked from the running servers, so they are what runs.
status_line() {
  local name=$1 p port state=stopped version=''
  p=$(prefix "$name")
  port=$("${p}_port")
  if "${p}_pid" >/dev/null; then
    state=running
    version=$(describe "$name") || version='(not answering)'
  fi
  printf '%-14s %-8s 127.0.0.1:%-6s %s\n' "$name" "$state" "$port" "$version"
}

cmd_status() {
  local s
  for s in "${SERVERS[@]}"; do status_line "$s" || true; done
}

usage() {
  sed -n '2,12s/^# \{0,1\}//p' "$STACK_HOME/stack.sh" >&2
  exit 2
}

main() {
  case ${1:-} in
    up | down | status) [[ $# -eq 1 ]] || usage; "cmd_$1" ;;
    start | stop) [[ $# -eq 2 ]] || usage; "cmd_$1" "$2" ;;
    *) usage ;;
  esac
}

main "$@"
