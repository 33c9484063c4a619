# The Debian archive this machine already uses, read from its own apt configuration, so that a
# script can reach another suite (trixie) of the same mirror without naming any host.
# Sourced by deploy/stack/timescaledb.sh, deploy/lint.sh and deploy/image.sh; tested by
# tests/unit/test_apt_mirror.py.
# shellcheck shell=bash

# apt_mirror_uri [SOURCES_LIST [SOURCES_PARTS [CODENAME]]]
# Prints the URI of the first enabled `deb`/`deb-src` entry whose suite is the release's own
# codename (bookworm: not bookworm-security nor bookworm-updates, which live elsewhere or hold
# only a few packages), in apt's order: the one-line sources.list first, then the files of
# sources.list.d in name order, each either one-line (*.list) or deb822 (*.sources).
# $INGESTD_APT_MIRROR, when set, wins. Exits 1 with a message when nothing matches.
apt_mirror_uri() {
  local list=${1:-/etc/apt/sources.list} parts=${2:-/etc/apt/sources.list.d} codename=${3:-}
  if [[ -n ${INGESTD_APT_MIRROR:-} ]]; then
    echo "${INGESTD_APT_MIRROR%/}"
    return 0
  fi
  if [[ -z $codename ]]; then
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  fi
  if [[ -z $codename ]]; then
    echo "apt_mirror_uri: no VERSION_CODENAME in /etc/os-release; set INGESTD_APT_MIRROR" >&2
    return 1
  fi
  local files=() f uri
  [[ -f $list ]] && files+=("$list")
  # Then sources.list.d in lexical order, whatever the extension, as apt reads it.
  mapfile -t -O "${#files[@]}" files < <(
    for f in "$parts"/*.list "$parts"/*.sources; do
      [[ -f $f ]] && echo "$f"
    done | LC_ALL=C sort
  )
  for f in "${files[@]}"; do
    if [[ $f == *.sources ]]; then
      uri=$(_apt_mirror_deb822 "$codename" <"$f")
    else
      uri=$(_apt_mirror_one_line "$codename" <"$f")
    fi
    if [[ -n $uri ]]; then
      echo "${uri%/}"
      return 0
    fi
  done
  echo "apt_mirror_uri: no enabled apt source for suite $codename in $list or $parts/; set INGESTD_APT_MIRROR" >&2
  return 1
}

# One-line form: `deb [opt=value ...] URI SUITE COMPONENT...`; comments and blank lines skipped.
_apt_mirror_one_line() {
  awk -v codename="$1" '
    { sub(/#.*/, "") }
    $1 != "deb" && $1 != "deb-src" { next }
    {
      line = $0
      sub(/^[ \t]*deb(-src)?[ \t]+/, "", line)
      if (line ~ /^\[/) { sub(/^\[[^]]*\][ \t]*/, "", line) }
      n = split(line, f, /[ \t]+/)
      if (n >= 2 && f[2] == codename) { print f[1]; exit }
    }'
}

# deb822 form: paragraphs of `Field: value` separated by blank lines; a line that starts with
# a space continues the field before it; `Enabled: no` switches a paragraph off.
_apt_mirror_deb822() {
  awk -v codename="$1" '
    function flush(   ntypes, types, nuris, uris, nsuites, suites, i, deb, hit, k) {
      if (!("uris" in p)) { delete p; return }
      for (k in p) gsub(/^[ \t]+|[ \t]+$/, "", p[k])
      ntypes = split(p["types"], types, /[ \t]+/)
      for (i = 1; i <= ntypes; i++) if (types[i] == "deb" || types[i] == "deb-src") deb = 1
      nsuites = split(p["suites"], suites, /[ \t]+/)
      for (i = 1; i <= nsuites; i++) if (suites[i] == codename) hit = 1
      if (deb && hit && tolower(p["enabled"]) != "no") {
        nuris = split(p["uris"], uris, /[ \t]+/)
        print uris[1]
        found = 1
      }
      delete p
    }
    /^#/ { next }
    /^[ \t]*$/ { flush(); if (found) exit; next }
    /^[ \t]/ { if (last != "") p[last] = p[last] " " $0; next }
    {
      i = index($0, ":")
      if (i == 0) next
      last = tolower(substr($0, 1, i - 1))
      v = substr($0, i + 1)
      gsub(/^[ \t]+|[ \t]+$/, "", v)
      p[last] = v
    }
    END { if (!found) flush() }'
}
