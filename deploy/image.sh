#!/usr/bin/env bash
# Builds the container image ingestd:<version> from deploy/Dockerfile (`make image`), with
# whichever engine answers: docker (an engine, not only the client) or podman (daemonless;
# `deploy/tools.sh` installs it from Debian). The build reaches no package registry:
#   1. deploy/wheelhouse.sh builds the wheels on the host, with the host's pip configuration;
#   2. the build context is a staged directory outside the repository holding those wheels
#      and the image's config file, never the source tree;
#   3. the base is $INGESTD_BASE_IMAGE if set, else the official python:3.11-slim-bookworm
#      if the engine has it or can pull it, else the stand-in deploy/base-image.sh makes with
#      debootstrap (cached under $INGESTD_CACHE_DIR, /var/cache/ingestd).
# Environment: INGESTD_IMAGE (default: ingestd) names the repository, e.g. registry.example/ingestd;
# INGESTD_ENGINE (docker|podman) picks the engine instead of asking both; INGESTD_WHEELHOUSE
# names a wheelhouse made elsewhere by deploy/wheelhouse.sh (an air-gapped build);
# INGESTD_IIDFILE receives the built image's id.
#   deploy/image.sh              build, then print "image: built NAME:VERSION with ENGINE ..."
#   deploy/image.sh --engine     print the engine's command line, one word a line, and exit
#   deploy/image.sh --run-args   print the flags every `run` needs here (limits), one a line
#                                (tests/integration/test_image.py runs the image with both)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

OFFICIAL_BASE=python:3.11-slim-bookworm
cache=${INGESTD_CACHE_DIR:-/var/cache/ingestd}/image
say() { echo "image: $*" >&2; }

# The engine as an array of words. Podman needs, on a machine without systemd (such as this
# project's, whose cgroup layout is hybrid): the cgroupfs manager and runc (crun refuses the
# layout); every `run` and `build` also needs explicit --ulimit values (below).
engine=()
pick_engine() {
  local want=${INGESTD_ENGINE:-}
  if [[ -z $want || $want == docker ]] && command -v docker >/dev/null &&
    timeout 20 docker info >/dev/null 2>&1; then
    engine=(docker)
  elif [[ -z $want || $want == podman ]] && command -v podman >/dev/null; then
    engine=(podman)
    [[ -d /run/systemd/system ]] || engine+=(--cgroup-manager=cgroupfs)
    command -v runc >/dev/null && engine+=(--runtime runc)
    timeout 20 "${engine[@]}" info >/dev/null 2>&1 || engine=()
  fi
  if ((!${#engine[@]})); then
    say "no container engine answers here: neither a Docker engine (docker info; DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}) nor podman${want:+ (INGESTD_ENGINE=$want)}; \`deploy/tools.sh\` installs podman"
    exit 1
  fi
}

pick_base() {
  if [[ -n ${INGESTD_BASE_IMAGE:-} ]]; then
    echo "$INGESTD_BASE_IMAGE"
  elif "${engine[@]}" image inspect "$OFFICIAL_BASE" >/dev/null 2>&1 ||
    timeout 120 "${engine[@]}" pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
    echo "$OFFICIAL_BASE"
  else
    say "$OFFICIAL_BASE cannot be pulled here: using Debian bookworm's python3 as the base"
    deploy/base-image.sh "${engine[@]}"
  fi
}

pick_engine

# Podman sets its own default file and process limits in every container it runs (the build's
# RUN steps too), which fails where they are above what this process may have (a machine that
# is itself a container): pass limits that fit. Files: our own hard limit, at most 65536;
# processes: 4096, far above what ingestd's workers and their threads use (on this project's
# machines 65536 is refused even under a hard limit of 96368, 32768 is accepted).
nofile=$(ulimit -Hn)
[[ $nofile == unlimited || $nofile -gt 65536 ]] && nofile=65536
args=()
[[ ${engine[0]} == podman ]] && args+=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
case ${1:-} in
  --engine)
    printf '%s\n' "${engine[@]}"
    exit 0
    ;;
  --run-args)
    printf '%s\n' "${args[@]}"
    exit 0
    ;;
esac

image=${INGESTD_IMAGE:-ingestd}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
[[ -n $version ]] || { say "no version found in pyproject.toml"; exit 1; }

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# A tree with uncommitted changes is not that revision: say so in the image's label.
if [[ $revision != unknown ]] && ! git diff --quiet HEAD 2>/dev/null; then
  revision+="-dirty"
fi

base=$(pick_base)
mkdir -p "$cache"
context=$(mktemp -d "$cache/context.XXXXXX")
trap 'rm -rf "$context"' EXIT
if [[ -n ${INGESTD_WHEELHOUSE:-} ]]; then
  # Made elsewhere by deploy/wheelhouse.sh (an air-gapped site): own/ and deps/.
  [[ -d $INGESTD_WHEELHOUSE/own && -d $INGESTD_WHEELHOUSE/deps ]] ||
    { say "INGESTD_WHEELHOUSE=$INGESTD_WHEELHOUSE holds no own/ and deps/ (deploy/wheelhouse.sh makes them)"; exit 1; }
  cp -rp "$INGESTD_WHEELHOUSE" "$context/wheels"
else
  # The wheels must fit the base's interpreter (patch release included: markers differ): ask it.
  target=$("${engine[@]}" run --rm -i "${args[@]}" --network none "$base" python3 - env \
    <deploy/wheel_markers.py)
  INGESTD_WHEEL_TARGET=$target deploy/wheelhouse.sh "$context/wheels"
fi
mkdir -p "$context/deploy/container"
cp deploy/container/ingestd.yaml "$context/deploy/container/"

previous=$("${engine[@]}" image inspect --format '{{.Id}}' "$image:$version" 2>/dev/null || true)
say "building $image:$version with ${engine[0]} on $base"
build_args=("${args[@]}")
# Podman writes OCI images by default, a format without HEALTHCHECK: ask for Docker's.
[[ ${engine[0]} == podman ]] && build_args+=(--format docker)
# The image's id, for a caller that must run exactly this build even if the tag moves on.
[[ -n ${INGESTD_IIDFILE:-} ]] && build_args+=(--iidfile "$INGESTD_IIDFILE")
"${engine[@]}" build "${build_args[@]}" -f deploy/Dockerfile \
  --build-arg "PYTHON_IMAGE=$base" \
  --build-arg "VERSION=$version" \
  --build-arg "REVISION=$revision" \
  -t "$image:$version" "$context"
# The image this build replaced, now without a tag, would stay on disk for good (~300 MB a
# change); its layers shared with the new one stay, as does the build cache.
current=$("${engine[@]}" image inspect --format '{{.Id}}' "$image:$version")
if [[ -n $previous && $previous != "$current" ]]; then
  "${engine[@]}" rmi "$previous" >/dev/null 2>&1 || true
fi
say "built $image:$version with ${engine[0]} on $base ($revision)"
