#!/usr/bin/env bash
# A multi-node Docker Swarm on this one machine, to try the Swarm stack and test it
# (tests/cluster): each node is a Docker engine in a container (deploy/swarm/node), joined
# over a bridge network of its own. Not for production: a real cluster is real machines
# (README, "Running on several machines").
#
#   deploy/swarm/local-cluster.sh up [NODES]   # build the node image, start NODES (default 3)
#                                              # engines, init + join, load the stack's images
#   deploy/swarm/local-cluster.sh load IMAGE.. # copy images from this engine to every node
#   deploy/swarm/local-cluster.sh env          # print DOCKER_HOST=... for the manager
#   deploy/swarm/local-cluster.sh down         # remove the nodes (by id) and the network
#
# The nodes run without --privileged (these VMs refuse it); the flags below are the ones
# that work (docs/deployment.md, "A local swarm"). Each node publishes its 80/443 on
# 127.0.0.1:(WWWS_CLUSTER_HTTP_BASE+i)/(WWWS_CLUSTER_HTTPS_BASE+i), so the Traefik task on
# node i answers at https://localhost:(base+i). The manager's engine also listens on
# tcp://<node1 address>:2375 (bridge-local, no TLS) so that the host's docker CLI can
# deploy to it: DOCKER_HOST=$(local-cluster.sh env).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PREFIX=${WWWS_CLUSTER:-wwws-node}
NETWORK=${PREFIX}-net
NODE_IMAGE=${WWWS_NODE_IMAGE:-wwws-swarm-node:dev}
HTTP_BASE=${WWWS_CLUSTER_HTTP_BASE:-18080}
HTTPS_BASE=${WWWS_CLUSTER_HTTPS_BASE:-18443}
PROMETHEUS_PORT=${WWWS_CLUSTER_PROMETHEUS_PORT:-19090}
IMAGES_ENV=$ROOT/deploy/build/images.env
T0=$(date +%s)

step() { printf '[cluster] %s (%ss)\n' "$*" "$(($(date +%s) - T0))"; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# shellcheck disable=SC1090
[ ! -f "$IMAGES_ENV" ] || { set -a; . "$IMAGES_ENV"; set +a; }

node_ids() { docker ps -aq --filter "label=wwws.cluster=$PREFIX"; }
address_of() {
    docker inspect -f "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "$1"
}
manager_host() { echo "tcp://$(address_of "${PREFIX}1"):2375"; }

# The images the stack runs: the app, Traefik, Redis, Prometheus (names as `make images` chose).
stack_images() {
    echo "${WWWS_APP_IMAGE:-wwws-app:dev}" "${WWWS_TRAEFIK_IMAGE:-traefik:v3.7}" \
        "${WWWS_REDIS_IMAGE:-redis:7}" "${WWWS_PROMETHEUS_IMAGE:-prom/prometheus:v2.53.2}"
}

wait_for_engine() {
    local node=$1 deadline=$((SECONDS + 60))
    until docker exec "$node" docker info >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { docker logs --tail 20 "$node" >&2; die "$node: its engine did not start in 60s"; }
        sleep 1
    done
}

up() {
    local nodes=${1:-3}
    [ -z "$(node_ids)" ] || die "a cluster '$PREFIX' exists already: $0 down first"
    local base=${WWWS_PYTHON_IMAGE:-python:3.11-slim-bookworm}
    step "node image $NODE_IMAGE (FROM $base, Debian's docker.io)"
    docker build -q --build-arg BASE_IMAGE="$base" -t "$NODE_IMAGE" "$ROOT/deploy/swarm/node" >/dev/null
    docker network inspect "$NETWORK" >/dev/null 2>&1 \
        || docker network create --label "wwws.cluster=$PREFIX" "$NETWORK" >/dev/null
    local i name
    for i in $(seq 1 "$nodes"); do
        name=$PREFIX$i
        local listen=(-H unix:///var/run/docker.sock)
        [ "$i" != 1 ] || listen+=(-H tcp://0.0.0.0:2375)
        docker run -d --name "$name" --hostname "$name" --network "$NETWORK" \
            --label "wwws.cluster=$PREFIX" \
            --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
            --cap-add ALL --cap-drop SYS_RESOURCE \
            --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
            -v /var/lib/docker \
            -p "127.0.0.1:$((HTTP_BASE + i)):80" -p "127.0.0.1:$((HTTPS_BASE + i)):443" \
            $([ "$i" != 1 ] || echo "-p 127.0.0.1:$PROMETHEUS_PORT:9090") \
            "$NODE_IMAGE" dockerd "${listen[@]}" --cgroup-parent="/$name" >/dev/null
    done
    for i in $(seq 1 "$nodes"); do wait_for_engine "$PREFIX$i"; done
    step "$nodes engines up"

    docker exec "${PREFIX}1" docker swarm init --advertise-addr eth0 >/dev/null
    local token manager_ip
    token=$(docker exec "${PREFIX}1" docker swarm join-token -q worker)
    manager_ip=$(address_of "${PREFIX}1")
    for i in $(seq 2 "$nodes"); do
        docker exec "$PREFIX$i" docker swarm join --token "$token" "$manager_ip:2377" >/dev/null
    done
    step "swarm of $nodes nodes (manager ${PREFIX}1)"

    load_images $(stack_images)
    docker exec "${PREFIX}1" docker node ls
    echo "DOCKER_HOST=$(manager_host)"
}

load_images() {
    # No registry here: every node gets the images from the host's engine (a real cluster
    # pushes them to its registry instead). One `docker save` stream per node, in parallel.
    local image node pids=()
    [ $# -gt 0 ] || die "load: which images?"
    for image in "$@"; do docker image inspect "$image" >/dev/null 2>&1 || die "no image $image: run make images"; done
    for node in $(docker ps --filter "label=wwws.cluster=$PREFIX" --format '{{.Names}}'); do
        (docker save "$@" | docker exec -i "$node" docker load -q >/dev/null) &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || die "loading the images into a node failed"; done
    step "loaded on every running node: $*"
}

down() {
    local ids
    ids=$(node_ids)
    if [ -n "$ids" ]; then
        step "removing $(echo "$ids" | wc -w) node(s) and their volumes"
        # shellcheck disable=SC2086
        docker rm -f -v $ids >/dev/null
    fi
    docker network rm "$NETWORK" >/dev/null 2>&1 || true
    step "cluster '$PREFIX' removed"
}

case "${1:-}" in
    up) up "${2:-3}" ;;
    down) down ;;
    env) echo "DOCKER_HOST=$(manager_host)" ;;
    load) shift; load_images "$@" ;;
    *) echo "usage: $0 up [NODES] | load IMAGE... | env | down" >&2; exit 2 ;;
esac
