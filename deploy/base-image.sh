#!/usr/bin/env bash
# The stand-in for the official python:3.11-slim-bookworm base, for machines that can pull no
# image (like this project's, which reach package registries only): Debian bookworm's minimal
# root filesystem with Python 3.11 and venv, made with debootstrap from the mirror the
# machine's own apt sources name, and imported into the engine as a base image.
#   deploy/base-image.sh ENGINE [FLAGS...]   (docker or podman and its global flags; prints the
#                                            image's name)
# The root filesystem is cached as a tarball under $INGESTD_CACHE_DIR (/var/cache/ingestd),
# so it is made once per machine (~45 s); importing it again takes a few seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=deploy/apt_mirror.sh
. deploy/apt_mirror.sh

(($#)) || { echo "usage: deploy/base-image.sh docker|podman [FLAGS...]" >&2; exit 2; }
engine=("$@")
SUITE=bookworm
# Bump REV when the package list or the clean-up below changes: a new tarball and image.
REV=1
PACKAGES=python3,python3-venv
name=localhost/ingestd-base:$SUITE-python3-r$REV
cache=${INGESTD_CACHE_DIR:-/var/cache/ingestd}/image
tarball=$cache/rootfs-$SUITE-python3-r$REV.tar

say() { echo "base-image: $*" >&2; }

if "${engine[@]}" image inspect "$name" >/dev/null 2>&1; then
  echo "$name"
  exit 0
fi

if [[ ! -s $tarball ]]; then
  command -v debootstrap >/dev/null ||
    { say "debootstrap is not installed (deploy/tools.sh installs it)"; exit 1; }
  mirror=$(apt_mirror_uri /etc/apt/sources.list /etc/apt/sources.list.d)
  mkdir -p "$cache"
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  say "debootstrap $SUITE (minbase + $PACKAGES) from the machine's own Debian mirror (~45 s)"
  if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror" \
    >"$cache/debootstrap.log" 2>&1; then
    tail -n 20 "$cache/debootstrap.log" >&2
    say "debootstrap failed (log: $cache/debootstrap.log)"
    exit 1
  fi
  # What a slim base leaves out: package lists, downloaded .debs, documentation.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  tar --numeric-owner -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi

say "importing $tarball as $name"
"${engine[@]}" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  "$tarball" "$name" >/dev/null
echo "$name"
