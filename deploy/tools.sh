#!/usr/bin/env bash
# Installs the tools that `make image`, `make lint` and `make test` need beyond the virtualenv,
# all from Debian (the machine's own apt sources), on a fresh machine; a second run checks and
# prints nothing:
#   podman, runc     build and run the image where no Docker engine answers (crun, podman's
#                    default runtime, refuses the hybrid cgroup layout of this project's machines)
#   debootstrap      the stand-in base image where the official one cannot be pulled
#   promtool         checks and unit-tests the Prometheus rules (deploy/prometheus/); taken out
#                    of Debian's prometheus package into $INGESTD_CACHE_DIR/bin, so that no
#                    Prometheus server is installed as a service or started with it (its
#                    binary lands beside promtool, for tests that run one themselves)
# Usage: deploy/tools.sh [image|promtool]...   (default: all). Prints promtool's path last when
# asked for promtool.
set -euo pipefail

CACHE=${INGESTD_CACHE_DIR:-/var/cache/ingestd}
PROMTOOL=$CACHE/bin/promtool
LOG=$CACHE/logs/tools.log
updated=0

say() { echo "tools: $*" >&2; }

# Run a noisy apt step with its output in the log, shown only when it fails.
quietly() {
  mkdir -p "$(dirname "$LOG")"
  printf '\n=== %s: %s\n' "$(date -Is)" "$*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1 </dev/null; then
    tail -n 15 "$LOG" >&2
    return 1
  fi
}

apt_update_once() {
  ((updated)) && return 0
  say "apt-get update"
  quietly apt-get update
  updated=1
}

need_root() {
  if [[ $(id -u) -ne 0 ]]; then
    say "$1 is missing and only root can install it: apt-get install $2"
    exit 1
  fi
}

installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == 'install ok installed' ]]; }

# A fresh machine's package lists are often empty: update and try again once.
install_pkgs() {
  local p missing=()
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  need_root "${missing[*]}" "${missing[*]}"
  say "installing ${missing[*]} (apt-get; log: $LOG)"
  quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" ||
    { apt_update_once && quietly env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "${missing[@]}"; } ||
    { say "apt-get install ${missing[*]} failed (log: $LOG)"; exit 1; }
}

image_tools() {
  # fuse-overlayfs: podman's overlay storage where the kernel's cannot stack on this filesystem.
  install_pkgs podman runc debootstrap fuse-overlayfs
}

promtool() {
  if [[ ! -x $PROMTOOL ]]; then
    local dir
    dir=$(mktemp -d)
    # shellcheck disable=SC2064  # expand now: the trap must remove this directory
    trap "rm -rf '$dir'" RETURN
    say "fetching promtool from Debian's prometheus package (log: $LOG)"
    quietly env -C "$dir" apt-get download prometheus ||
      { apt_update_once && quietly env -C "$dir" apt-get download prometheus; } ||
      { say "apt-get download prometheus failed (log: $LOG)"; exit 1; }
    quietly dpkg-deb -x "$dir"/prometheus_*.deb "$dir/root"
    mkdir -p "$(dirname "$PROMTOOL")"
    # The server too, for the test that scrapes a running ingestd (tests/integration).
    install -m 0755 "$dir/root/usr/bin/prometheus" "$CACHE/bin/prometheus"
    install -m 0755 "$dir/root/usr/bin/promtool" "$PROMTOOL.tmp"
    mv "$PROMTOOL.tmp" "$PROMTOOL"
  fi
  echo "$PROMTOOL"
}

(($#)) || set -- image promtool
for what in "$@"; do
  case $what in
    image) image_tools ;;
    promtool) promtool ;;
    *)
      say "unknown tool set: $what (image, promtool)"
      exit 2
      ;;
  esac
done
