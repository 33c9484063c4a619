# Redis from Debian's redis-server package, run as the package's `redis` user with our own
# config; the system service is never used. Sourced by stack.sh.
# shellcheck shell=bash

REDIS_PORT=${INGESTD_REDIS_PORT:-6379}
REDIS_DIR=$STACK_DIR/redis
REDIS_CONF=$REDIS_DIR/redis.conf
REDIS_PIDFILE=$REDIS_DIR/redis.pid

redis_up() {
  check_port_value redis "$REDIS_PORT"
  ensure_pkgs redis redis-server redis-tools
  install -d -m 755 "$STACK_DIR"
  install -d -o redis -g redis -m 750 "$REDIS_DIR"
  local changed=0
  redis_write_config && changed=1
  if redis_pid >/dev/null && ((changed)); then
    log redis "configuration changed, restarting"
    redis_stop
  elif redis_pid >/dev/null; then
    wait_for 30 redis_ping || { show_tail "$REDIS_DIR/redis.log"; die redis "running but no PONG on 127.0.0.1:$(redis_port)"; }
    log redis "already running on 127.0.0.1:$(redis_port)"
    return 0
  fi
  redis_start
}

# Redis renames its process to "redis-server 127.0.0.1:PORT", so match on that.
redis_pid() { live_pid "$REDIS_PIDFILE" redis-server; }

redis_port() {
  local port=''
  [[ -r $REDIS_CONF ]] && port=$(sed -n 's/^port //p' "$REDIS_CONF")
  echo "${port:-$REDIS_PORT}"
}

# timeout: a stopped (SIGSTOP) or wedged server accepts the connection but never answers.
redis_cli() { timeout 5 redis-cli -h 127.0.0.1 -p "$(redis_port)" "$@"; }

redis_ping() { [[ $(redis_cli ping 2>/dev/null) == PONG ]]; }

redis_config_text() {
  cat <<EOF
# Written by deploy/stack/redis.sh on every run; edits here are overwritten.
bind 127.0.0.1
protected-mode yes
port $REDIS_PORT
daemonize yes
supervised no
pidfile $REDIS_PIDFILE
dir $REDIS_DIR
logfile $REDIS_DIR/redis.log
appendonly no
save ""
EOF
}

redis_write_config() { write_if_changed "$REDIS_CONF" "$(redis_config_text)"; }

redis_start() {
  require_free_port redis "$REDIS_PORT" INGESTD_REDIS_PORT
  log redis "starting on 127.0.0.1:$REDIS_PORT"
  rm -f "$REDIS_PIDFILE"
  # Errors before daemonizing (bad config) go to stderr, not to the configured logfile.
  local out=$REDIS_DIR/start.log
  as_user redis redis-server "$REDIS_CONF" >"$out" 2>&1 </dev/null ||
    { show_tail "$out" "$REDIS_DIR/redis.log"; die redis "redis-server did not start"; }
  wait_for 30 redis_ping || { show_tail "$out" "$REDIS_DIR/redis.log"; die redis "no PONG on port $REDIS_PORT after 30s"; }
}

redis_stop() {
  local pid
  if ! pid=$(redis_pid); then
    log redis "not running"
    return 0
  fi
  log redis "stopping (pid $pid)"
  stop_pid redis "$pid" 30
  rm -f "$REDIS_PIDFILE"
}

redis_version() { redis_cli INFO server | tr -d '\r' | sed -n 's/^redis_version://p'; }
