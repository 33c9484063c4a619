# TimescaleDB (Apache-2 part only) built from Debian trixie's source package against the
# system PostgreSQL. Debian 12 has no timescaledb package, and the upstream repo ships the
# TSL-licensed build; the trixie source is signed by a key Debian 12 already trusts, and comes
# from the mirror the machine's own apt sources name (deploy/apt_mirror.sh).
# Sourced by stack.sh.
# shellcheck shell=bash

TS_SRC_DIR=$CACHE_DIR/src
TS_APT_DIR=$CACHE_DIR/apt-trixie
TS_LOG=$LOG_DIR/timescaledb-build.log

# Fast path first: nothing to download or build when the extension is already installed.
ts_ensure_installed() {
  ts_installed && return 0
  ensure_pkgs postgres "postgresql-server-dev-$PG_MAJOR" build-essential cmake dpkg-dev libssl-dev xz-utils
  ts_fetch_source
  local dir
  dir=$TS_SRC_DIR/timescaledb-$(ts_upstream_version)
  ts_extract "$dir"
  ts_build "$dir"
  ts_install "$dir"
  ts_installed || die postgres "timescaledb was installed but its files are not in $(ts_libdir)"
}

ts_libdir() { "$PG_BIN/pg_config" --pkglibdir; }
ts_extdir() { echo "$("$PG_BIN/pg_config" --sharedir)/extension"; }

# Installed = loader library, a versioned library and the control file are all present.
ts_installed() {
  local lib
  lib=$(ts_libdir)
  [[ -f $lib/timescaledb.so && -f $(ts_extdir)/timescaledb.control ]] &&
    compgen -G "$lib/timescaledb-[0-9]*.so" >/dev/null
}

# apt options for a private trixie deb-src config: the system's sources stay untouched.
ts_apt_opts() {
  printf '%s\n' -o "Dir::Etc::SourceList=$TS_APT_DIR/etc/sources.list" \
    -o "Dir::Etc::SourceParts=$TS_APT_DIR/etc/sources.list.d" \
    -o "Dir::State::Lists=$TS_APT_DIR/lists"
}

# The one-line deb-src entry for trixie on MIRROR (the URI of this machine's own apt source).
ts_src_line() {
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $1 trixie main"
}

ts_dsc() { { compgen -G "$TS_SRC_DIR/timescaledb_*.dsc" || true; } | sort -V | tail -n 1; }

ts_fetch_source() {
  [[ -n $(ts_dsc) ]] && return 0
  log postgres "downloading the timescaledb source package from Debian trixie"
  local mirror
  mirror=$(apt_mirror_uri /etc/apt/sources.list /etc/apt/sources.list.d) || die postgres "cannot tell which Debian mirror to fetch the trixie source from (above)"
  mkdir -p "$TS_APT_DIR"/{lists/partial,etc/sources.list.d} "$TS_SRC_DIR"
  ts_src_line "$mirror" >"$TS_APT_DIR/etc/sources.list"
  local opts
  mapfile -t opts < <(ts_apt_opts)
  run_logged postgres "$TS_LOG" "apt-get update of the trixie source index failed (no network to $mirror?)" \
    apt-get "${opts[@]}" --error-on=any update
  run_logged postgres "$TS_LOG" "downloading the timescaledb source package failed" \
    env -C "$TS_SRC_DIR" apt-get "${opts[@]}" source --download-only timescaledb
  [[ -n $(ts_dsc) ]] || die postgres "apt-get source left no timescaledb_*.dsc in $TS_SRC_DIR"
}

# Upstream version from the .dsc, e.g. "2.19.3+dfsg-1+deb13u1" -> "2.19.3+dfsg".
ts_upstream_version() {
  local v
  v=$(sed -n 's/^Version: *//p' "$(ts_dsc)")
  v=${v#*:}
  echo "${v%-*}"
}

# Unpack (with Debian's patches applied) into DIR. Unpacked under a temporary name and
# renamed, so an interrupted run leaves no half tree that would look complete.
ts_extract() {
  local dir=$1
  [[ -f $dir/CMakeLists.txt ]] && return 0
  log postgres "unpacking $(basename "$(ts_dsc)")"
  rm -rf "$dir.tmp"
  run_logged postgres "$TS_LOG" "dpkg-source -x failed" dpkg-source -x "$(ts_dsc)" "$dir.tmp"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
}

ts_version() { sed -n 's/^version *= *//p' "$1/version.config"; }

ts_build() {
  local dir=$1 ver
  ver=$(ts_version "$dir")
  [[ -f $dir/build/src/timescaledb-$ver.so ]] && return 0
  log postgres "building timescaledb $ver (first run, ~3 min; log: $TS_LOG)"
  # A half-configured build dir from an interrupted run is reused; bootstrap would prompt.
  if [[ ! -f $dir/build/Makefile ]]; then
    run_logged postgres "$TS_LOG" "timescaledb configure (cmake) failed" \
      env -C "$dir" BUILD_FORCE_REMOVE=true ./bootstrap -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF \
      -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF "-DPG_CONFIG=$PG_BIN/pg_config"
  fi
  run_logged postgres "$TS_LOG" "timescaledb build failed" make -C "$dir/build" -j "$(nproc)"
}

ts_install() {
  log postgres "installing timescaledb $(ts_version "$1") into $(ts_libdir)"
  run_logged postgres "$TS_LOG" "timescaledb make install failed" make -C "$1/build" install
}
