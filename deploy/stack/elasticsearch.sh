# Elasticsearch: the integ-test zip from Maven Central (the only ES distribution reachable
# through a package registry here), run as a dedicated system user since ES refuses root.
# This zip only has the apm, transport-netty4 and x-pack-core/security modules: `GET /`
# answers 405, so we probe /_cluster/health and read the version from /_nodes/_local.
# Sourced by stack.sh.
# shellcheck shell=bash

ES_VERSION=${INGESTD_ES_VERSION:-8.19.21}
ES_PORT=${INGESTD_ES_PORT:-9200}
ES_TRANSPORT_PORT=${INGESTD_ES_TRANSPORT_PORT:-9300}
ES_HEAP=${INGESTD_ES_HEAP:-512m}
ES_USER=ingestd-stack
ES_CACHE=$CACHE_DIR/es
ES_HOME=$ES_CACHE/elasticsearch-$ES_VERSION
ES_STATE=$STACK_DIR/es
ES_CONF=$ES_STATE/config
ES_PIDFILE=$ES_STATE/elasticsearch.pid
ES_LOG=$ES_STATE/logs/ingestd-dev.log   # <path.logs>/<cluster.name>.log
ES_START_TIMEOUT=120

es_up() {
  check_port_value elasticsearch "$ES_PORT"
  check_port_value elasticsearch "$ES_TRANSPORT_PORT"
  es_check_heap
  es_find_java
  ensure_pkgs elasticsearch curl unzip
  es_fetch
  es_prepare_user_and_dirs
  local changed=0
  es_write_config && changed=1
  if es_pid >/dev/null && ((changed)); then
    log elasticsearch "configuration or version changed, restarting"
    es_stop
  elif es_pid >/dev/null; then
    es_wait_healthy "$ES_STATE/logs/startup.log"   # it may still be starting
    log elasticsearch "already running on 127.0.0.1:$(es_port)"
    return 0
  fi
  es_start
}

# The heap shares 2 cores / the machine with PostgreSQL and the tests: cap it at 1g.
es_check_heap() {
  local mb
  case $ES_HEAP in
    [0-9]*[mM]) mb=${ES_HEAP%[mM]} ;;
    [0-9]*[gG]) mb=$((${ES_HEAP%[gG]} * 1024)) ;;
    *) mb=x ;;
  esac
  if [[ ! $mb =~ ^[0-9]+$ ]] || ((mb < 128 || mb > 1024)); then
    die elasticsearch "INGESTD_ES_HEAP='$ES_HEAP' must be between 128m and 1g (e.g. 512m)"
  fi
}

java_major() { "$1/bin/java" -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n 1; }

# Sets ES_JAVA_HOME: an explicit ES_JAVA_HOME wins, then OpenJDK 17 (what ES 8 is tested
# on here), then any other JDK >= 17 under /usr/lib/jvm.
es_find_java() {
  local c major
  for c in "${ES_JAVA_HOME:-}" /usr/lib/jvm/java-17-openjdk-* /usr/lib/jvm/*; do
    [[ -n $c && -x $c/bin/java ]] || continue
    major=$(java_major "$c")
    if [[ $major =~ ^[0-9]+$ ]] && ((major >= 17)); then
      ES_JAVA_HOME=$c
      return 0
    fi
  done
  die elasticsearch "no Java 17+ found (set ES_JAVA_HOME, or: apt-get install -y openjdk-17-jre-headless)"
}

es_fetch() {
  [[ -x $ES_HOME/bin/elasticsearch ]] && return 0
  local zip=$ES_CACHE/elasticsearch-$ES_VERSION.zip
  [[ -s $zip ]] || es_download
  log elasticsearch "unpacking $(basename "$zip")"
  rm -rf "$ES_CACHE/unzip.tmp"
  run_logged elasticsearch "$LOG_DIR/es-download.log" "unzip of $zip failed (corrupt download? delete it and retry)" \
    unzip -q "$zip" -d "$ES_CACHE/unzip.tmp"
  [[ -x $ES_CACHE/unzip.tmp/elasticsearch-$ES_VERSION/bin/elasticsearch ]] ||
    die elasticsearch "$zip does not contain elasticsearch-$ES_VERSION/bin/elasticsearch"
  mv "$ES_CACHE/unzip.tmp/elasticsearch-$ES_VERSION" "$ES_HOME"
  rm -rf "$ES_CACHE/unzip.tmp"
}

es_download() {
  command -v mvn >/dev/null || ensure_pkgs elasticsearch maven
  log elasticsearch "downloading Elasticsearch $ES_VERSION from Maven Central (~100 MB)"
  mkdir -p "$ES_CACHE"
  run_logged elasticsearch "$LOG_DIR/es-download.log" \
    "downloading org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION failed (no network to Maven Central, or no such version?)" \
    env -C "$ES_CACHE" JAVA_HOME="$ES_JAVA_HOME" mvn -B -q -Dstyle.color=never dependency:copy \
    "-Dartifact=org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip" \
    "-DoutputDirectory=$ES_CACHE"
}

# The distribution's config dir is copied once (ES writes its keystore there); our two
# files on top of it are rewritten on every run.
es_prepare_user_and_dirs() {
  id -u "$ES_USER" >/dev/null 2>&1 ||
    useradd --system --user-group --no-create-home --home-dir "$ES_STATE" --shell /usr/sbin/nologin "$ES_USER"
  install -d -m 755 "$STACK_DIR"
  install -d -o "$ES_USER" -g "$ES_USER" -m 750 "$ES_STATE" "$ES_STATE"/{data,logs,tmp}
  if [[ ! -f $ES_CONF/jvm.options ]]; then
    rm -rf "$ES_CONF"
    cp -r "$ES_HOME/config" "$ES_CONF"
    mkdir -p "$ES_CONF/jvm.options.d"
    chown -R "$ES_USER:$ES_USER" "$ES_CONF"
  fi
}

es_config_text() {
  cat <<EOF
# Written by deploy/stack/elasticsearch.sh for Elasticsearch $ES_VERSION; edits are overwritten.
cluster.name: ingestd-dev
node.name: dev-1
discovery.type: single-node
network.host: 127.0.0.1
http.port: $ES_PORT
transport.port: $ES_TRANSPORT_PORT
path.data: $ES_STATE/data
path.logs: $ES_STATE/logs
xpack.security.enabled: false
xpack.ml.enabled: false
EOF
}

# Returns 0 when either file changed (the version is in the yml comment, so a new
# INGESTD_ES_VERSION also counts as a change and restarts the node).
es_write_config() {
  local rc=1 # 1 = nothing changed
  write_if_changed "$ES_CONF/elasticsearch.yml" "$(es_config_text)" && rc=0
  write_if_changed "$ES_CONF/jvm.options.d/heap.options" "$(printf -- '-Xms%s\n-Xmx%s' "$ES_HEAP" "$ES_HEAP")" && rc=0
  chown -R "$ES_USER:$ES_USER" "$ES_CONF"
  return "$rc"
}

# The server JVM carries our config path on its command line, which tells it from any other ES.
es_pid() { live_pid "$ES_PIDFILE" "$ES_STATE"; }

es_port() {
  local port=''
  [[ -r $ES_CONF/elasticsearch.yml ]] && port=$(sed -n 's/^http\.port: *//p' "$ES_CONF/elasticsearch.yml")
  echo "${port:-$ES_PORT}"
}

es_get() { curl -fsS -m 5 "http://127.0.0.1:$(es_port)$1"; }

es_healthy() { [[ $(es_get /_cluster/health 2>/dev/null) =~ \"status\":\"(green|yellow)\" ]]; }

es_start() {
  require_free_port elasticsearch "$ES_PORT" INGESTD_ES_PORT
  require_free_port elasticsearch "$ES_TRANSPORT_PORT" INGESTD_ES_TRANSPORT_PORT
  log elasticsearch "starting $ES_VERSION on 127.0.0.1:$ES_PORT (heap $ES_HEAP, ~30 s)"
  rm -f "$ES_PIDFILE"
  local out=$ES_STATE/logs/startup.log
  # Raise the fd limit where permitted; too low a limit is only a warning in single-node mode.
  if ! (ulimit -n 65535 2>/dev/null || true
    as_user "$ES_USER" env ES_PATH_CONF="$ES_CONF" ES_TMPDIR="$ES_STATE/tmp" ES_JAVA_HOME="$ES_JAVA_HOME" \
      "$ES_HOME/bin/elasticsearch" -d -p "$ES_PIDFILE") >"$out" 2>&1 </dev/null; then
    show_tail "$out" "$ES_LOG"
    die elasticsearch "bin/elasticsearch -d failed (log: $ES_LOG)"
  fi
  es_wait_healthy "$out"
}

# Healthy = green or yellow. Gives up early when the JVM has exited (bad config, no memory).
es_wait_healthy() {
  local deadline=$((SECONDS + ES_START_TIMEOUT))
  until es_healthy; do
    es_pid >/dev/null || { show_tail "$1" "$ES_LOG"; die elasticsearch "the server exited during startup (log: $ES_LOG)"; }
    ((SECONDS < deadline)) || { show_tail "$ES_LOG"; die elasticsearch "no green/yellow /_cluster/health on port $(es_port) after ${ES_START_TIMEOUT}s (log: $ES_LOG)"; }
    sleep 1
  done
}

es_stop() {
  local pid
  if ! pid=$(es_pid); then
    log elasticsearch "not running"
    return 0
  fi
  log elasticsearch "stopping (pid $pid)"
  stop_pid elasticsearch "$pid" 60
  rm -f "$ES_PIDFILE"
}

es_version() {
  es_get '/_nodes/_local?filter_path=nodes.*.version' | grep -o '"version":"[^"]*"' | head -n 1 | cut -d'"' -f4
}
