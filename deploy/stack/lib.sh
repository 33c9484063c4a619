# Shared helpers for the dev stack scripts. Sourced by stack.sh, never run directly.
# shellcheck shell=bash

STACK_DIR=${INGESTD_STACK_DIR:-/var/lib/ingestd-stack}
CACHE_DIR=${INGESTD_CACHE_DIR:-/var/cache/ingestd}
LOG_DIR=$CACHE_DIR/logs                       # build/download/apt output, never the terminal
APT_UPDATED=0

# ---- messages -------------------------------------------------------------

log() { printf 'stack: %s: %s\n' "$1" "$2" >&2; }

# The one line a failure ends with; it is printed last so it stays visible under any log tail.
die() {
  printf 'stack: %s: %s\n' "$1" "$2" >&2
  exit 1
}

show_tail() {
  local f
  for f in "$@"; do
    [[ -s $f ]] || continue
    printf -- '--- last lines of %s\n' "$f" >&2
    tail -n 25 "$f" >&2
  done
}

# Run a long, noisy command with its output appended to a log file; on failure show the
# tail of that log and stop. Usage: run_logged STEP LOGFILE WHY CMD...
run_logged() {
  local step=$1 logf=$2 why=$3
  shift 3
  mkdir -p "$(dirname "$logf")"
  printf '\n=== %s: %s\n' "$(date -Is)" "$*" >>"$logf"
  if ! "$@" >>"$logf" 2>&1 </dev/null; then
    show_tail "$logf"
    die "$step" "$why (full log: $logf)"
  fi
}

# ---- users, packages --------------------------------------------------------

require_root() {
  [[ $(id -u) -eq 0 ]] || die "$1" "must run as root (it installs packages and runs servers as their own users)"
}

# Run a command as another user, from / (the caller's cwd may be unreadable to that user)
# and with the lock fd closed so that daemons do not inherit and hold our lock forever.
as_user() {
  local user=$1
  shift
  (cd / && exec runuser -u "$user" -- "$@" 9>&-)
}

pkg_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == 'install ok installed' ]]
}

# Install the Debian packages that are missing; `apt-get update` only if the first try fails
# (fresh machines often have empty package lists).
ensure_pkgs() {
  local step=$1 p missing=()
  shift
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  log "$step" "installing ${missing[*]} (apt-get)"
  if ! apt_install "${missing[@]}" >>"$LOG_DIR/apt.log" 2>&1 </dev/null; then
    apt_update_once "$step"
    run_logged "$step" "$LOG_DIR/apt.log" "apt-get install ${missing[*]} failed" apt_install "${missing[@]}"
  fi
}

apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; }

apt_update_once() {
  ((APT_UPDATED)) && return 0
  log "$1" "apt-get update"
  run_logged "$1" "$LOG_DIR/apt.log" "apt-get update failed (no network to the Debian mirror?)" apt-get update
  APT_UPDATED=1
}

# ---- ports, pids ------------------------------------------------------------

check_port_value() {
  if [[ ! $2 =~ ^[0-9]+$ ]] || (($2 < 1 || $2 > 65535)); then die "$1" "invalid port '$2'"; fi
}

# True when something accepts TCP connections on 127.0.0.1:PORT (also catches 0.0.0.0 binds).
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Best-effort "name pid N" of the listener, for the error message only.
port_owner() {
  local users
  users=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -n 1) || true
  [[ -n $users ]] || { echo "unknown process"; return 0; }
  users=${users#users:((\"}
  echo "${users%%\"*} pid ${users##*pid=}"
}

# Called only when our own server is not running, so any listener belongs to someone else.
require_free_port() {
  local step=$1 port=$2 var=$3
  port_open "$port" || return 0
  die "$step" "port $port is already in use by another process ($(port_owner "$port")); stop it or set $var to a free port"
}

# Print the pid in PIDFILE if that process is alive and its command line contains PATTERN;
# the pattern guards against a stale pid file whose pid was reused by something else.
live_pid() {
  local pidfile=$1 pattern=$2 pid cmdline
  [[ -r $pidfile ]] || return 1
  pid=$(head -n 1 "$pidfile" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$pattern"* ]] || return 1
  echo "$pid"
}

# Poll CMD... every 0.2 s for up to SECONDS; false on timeout. Usage: wait_for SECONDS CMD...
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# Wait up to SECONDS for PID to exit.
wait_exit() { wait_for "$2" pid_gone "$1"; }

pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# SIGTERM a daemon, wait for it, SIGKILL as a last resort (a dev stack must be stoppable).
stop_pid() {
  local step=$1 pid=$2 timeout=$3
  kill -TERM "$pid" 2>/dev/null || return 0
  wait_exit "$pid" "$timeout" && return 0
  log "$step" "pid $pid still alive after ${timeout}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  wait_exit "$pid" 10 || die "$step" "pid $pid does not exit even after SIGKILL"
}

# ---- files --------------------------------------------------------------------

# Write CONTENT to FILE only when it differs; returns 0 when the file changed. Atomic, so a
# crash never leaves a half-written config behind.
write_if_changed() {
  local file=$1 content=$2
  [[ -f $file && $(<"$file") == "$content" ]] && return 1
  printf '%s\n' "$content" >"$file.tmp"
  mv -f "$file.tmp" "$file"
}

# Serialise concurrent stack.sh runs (e.g. two terminals running `make test`).
take_lock() {
  mkdir -p "$STACK_DIR" "$LOG_DIR"
  exec 9>"$STACK_DIR/.lock"
  flock -n 9 && return 0
  log lock "waiting for another stack.sh run to finish"
  flock -w 900 9 || die lock "another stack.sh still holds $STACK_DIR/.lock after 15 min"
}
