#!/usr/bin/env bash
# Builds the wheelhouse the image installs from with `pip install --no-index`, so that the image
# build reaches no package registry (the same way an air-gapped site builds it):
#   deploy/wheelhouse.sh DIR
# DIR/own receives the project's wheel and the native codec's when native/ has a
# pyproject.toml; DIR/deps a wheel of every runtime dependency. The host's own pip (and its configuration: index,
# proxy, certificates) fetches them; the interpreter must be the image's (CPython 3.11 on
# glibc), which it checks. Dependencies and build backends are cached under
# $INGESTD_CACHE_DIR (/var/cache/ingestd), keyed by pyproject.toml, so later runs only build the
# project's own wheels, offline (a few seconds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=${1:?usage: deploy/wheelhouse.sh DIR}
python=${INGESTD_WHEEL_PYTHON:-python3}
# The image's interpreter, as PEP 508 marker variables (JSON from `deploy/wheel_markers.py env`
# run in the base image; deploy/image.sh asks it). Default: this host's own interpreter.
target=${INGESTD_WHEEL_TARGET:-$("$python" deploy/wheel_markers.py env)}

say() { echo "wheelhouse: $*" >&2; }

field() { "$python" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$target" "$1"; }
want=$(field python_version)
have=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ $have != "$want" ]]; then
  say "$python is Python $have; the image runs $want, whose wheels differ (set INGESTD_WHEEL_PYTHON)"
  exit 1
fi

cache=${INGESTD_CACHE_DIR:-/var/cache/ingestd}/image
key=$({
  field python_full_version
  field platform_machine
  cat pyproject.toml
  cat native/pyproject.toml native/Cargo.lock 2>/dev/null || true
} | sha256sum | cut -c1-12)
deps=$cache/wheels-py$(field python_full_version)-$key
log=$cache/wheelhouse.log
mkdir -p "$cache"

pip_quietly() {
  printf '\n=== %s: pip %s\n' "$(date -Is)" "$*" >>"$log"
  if ! "$python" -m pip --disable-pip-version-check "$@" >>"$log" 2>&1 </dev/null; then
    tail -n 20 "$log" >&2
    say "pip $1 failed (log: $log)"
    exit 1
  fi
}

projects=(.)
[[ -f native/pyproject.toml ]] && projects+=(./native)

# What each project's [build-system] needs (setuptools; maturin for native/).
build_requires() {
  local project
  for project in "${projects[@]}"; do
    "$python" -c 'import sys, tomllib
print(*tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"], sep="\n")' \
      "$project/pyproject.toml"
  done
}

if [[ ! -d $deps ]]; then
  say "fetching the runtime dependencies' wheels and the build backends (first run for this pyproject.toml)"
  rm -rf "$deps.tmp"
  pip_quietly wheel --quiet --wheel-dir "$deps.tmp/run" "${projects[@]}"
  # Markers select other wheels for another patch release (redis wants async-timeout below
  # 3.11.3): add what the image's interpreter needs, and what that needs in turn.
  for _ in 1 2 3 4 5; do
    mapfile -t more < <("$python" deploy/wheel_markers.py missing "$deps.tmp/run" "$target")
    ((${#more[@]})) || break
    pip_quietly wheel --quiet --wheel-dir "$deps.tmp/run" "${more[@]}"
  done
  # The project's own wheels are rebuilt on every run below; the cache keeps the rest.
  rm -f "$deps.tmp"/run/ingestd-*.whl "$deps.tmp"/run/ingestd_*.whl
  mapfile -t backends < <(build_requires)
  pip_quietly download --quiet --only-binary=:all: --dest "$deps.tmp/build" "${backends[@]}"
  mv "$deps.tmp" "$deps"
fi

rm -rf "$out"
mkdir -p "$out/deps"
cp -p "$deps"/run/*.whl "$out"/deps/
# The projects themselves from the source tree as it is now, offline (the isolated build
# environment installs its backend from the cache too), with fixed timestamps in the zip: the
# same source gives the same wheel, so the image build's layer cache holds.
SOURCE_DATE_EPOCH=315532800 pip_quietly wheel --quiet --no-deps --no-index \
  --find-links "$deps/build" --wheel-dir "$out/own" "${projects[@]}"
say "$(find "$out" -name '*.whl' | wc -l) wheels in $out ($(du -sh "$out" | cut -f1))"
