#!/usr/bin/env bash
# Builds the container image ingestd:<version> from deploy/Dockerfile (`make image`).
# Needs a Docker engine; where none answers (as on the project's dev machines, which have only
# the docker client) it says so in one line and exits 1.
# Environment: INGESTD_IMAGE (default: ingestd) names the repository, e.g. registry.example/ingestd.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

image=${INGESTD_IMAGE:-ingestd}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
[[ -n $version ]] || { echo "image: no version found in pyproject.toml" >&2; exit 1; }

if ! command -v docker >/dev/null; then
  echo "image: cannot build $image:$version: the docker client is not installed" >&2
  exit 1
fi
# `docker info` is the one call that needs the engine; bounded, in case DOCKER_HOST points
# at a machine that does not answer.
if ! timeout 20 docker info >/dev/null 2>&1; then
  echo "image: cannot build $image:$version: no Docker engine answers here (docker info failed; DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock})" >&2
  exit 1
fi

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# A tree with uncommitted changes is not that revision: say so in the image's label.
if [[ $revision != unknown ]] && ! git diff --quiet HEAD 2>/dev/null; then
  revision+="-dirty"
fi

docker build -f deploy/Dockerfile \
  --build-arg "VERSION=$version" \
  --build-arg "REVISION=$revision" \
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$image:$version" .
echo "image: built $image:$version ($revision)"
