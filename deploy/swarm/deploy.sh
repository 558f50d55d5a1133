#!/usr/bin/env bash
# Deploy the wwws stack on the Swarm of the current Docker engine (a manager; or
# DOCKER_HOST=... pointing at one): make swarm-up. Idempotent: run it again after a change.
#
# 1. Secret files from .env (make env writes it) and deploy/certs (make certs) into
#    deploy/build/swarm/<stack>/ (mode 600, never committed); each deploy names the secrets
#    and configs by a hash of their content, so a changed value becomes a new secret and the
#    services roll over to it (Swarm refuses to change a secret in use).
# 2. docker stack deploy -c deploy/swarm/stack.yaml <stack> (WWWS_STACK, default wwws).
# 3. Waits (with a progress line) until every service runs its desired number of tasks.
#
# Settings (environment): WWWS_STACK, WWWS_APP_IMAGE & co (the images: on a real cluster,
# names in your registry, pushed first), CHAT_REPLICAS..., WWWS_TRAEFIK_REPLICAS (default:
# 2, or 1 on a one-node swarm), WWWS_SCALER=1 (start the autoscaler), DOCKER_GID (the
# managers' docker group; found by asking the engine), WWWS_DEPLOY_TIMEOUT (default 240 s).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
T0=$(date +%s)
step() { printf '[swarm] %s (%ss)\n' "$*" "$(($(date +%s) - T0))"; }
die() { printf '[swarm] ERROR: %s\n' "$*" >&2; exit 1; }

export WWWS_STACK=${WWWS_STACK:-wwws}
case "$WWWS_STACK" in
    *_*|"") die "WWWS_STACK=$WWWS_STACK: a stack name without '_' (Prometheus finds the service name after it)" ;;
esac

# shellcheck disable=SC1091
[ ! -f deploy/build/images.env ] || { set -a; . deploy/build/images.env; set +a; }
env_value() {
    # the environment wins, then .env
    local name=$1
    if [ -n "${!name:-}" ]; then echo "${!name}"; return; fi
    sed -n "s/^[[:space:]]*$name=//p" .env 2>/dev/null | tail -n1
}

state=$(docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}' 2>/dev/null) \
    || die "the Docker engine does not answer (DOCKER_HOST=${DOCKER_HOST:-local})"
case "$state" in
    "active true") ;;
    active*) die "this engine is a swarm worker: run it on a manager (or DOCKER_HOST=<manager>)" ;;
    *) die "this engine is not in a swarm: 'docker swarm init' first (README, Running on several machines)" ;;
esac

secret_dir=deploy/build/swarm/$WWWS_STACK
mkdir -p "$secret_dir"
chmod 700 "$secret_dir"
write_secret() {
    # write_secret FILE VALUE: only when the value changed (keeps the hash, and the secret)
    local file=$secret_dir/$1 value=$2
    [ -n "$value" ] || die "$1: its value is empty (make env fills .env)"
    if [ ! -f "$file" ] || [ "$(cat "$file")" != "$value" ]; then
        (umask 077 && printf '%s' "$value" >"$file")
    fi
}
redis_password=$(env_value WWWS_REDIS_PASSWORD)
write_secret token_secret "$(env_value WWWS_TOKEN_SECRET)"
write_secret redis_password "$redis_password"
write_secret ticker_api_key "$(env_value WWWS_TICKER_API_KEY)"
write_secret admin_api_key "$(env_value WWWS_ADMIN_API_KEY)"
# the services reach Redis through the Sentinels; an ack waits for one replica (docs/deployment.md)
write_secret backplane_url "redis+sentinel://wwws:$redis_password@sentinel:26379/wwws/0?ack_replicas=${WWWS_ACK_REPLICAS:-1}&ack_timeout_ms=${WWWS_ACK_TIMEOUT_MS:-1000}"
[ -f deploy/certs/server.crt ] && [ -f deploy/certs/server.key ] || die "no deploy/certs/server.{crt,key}: make certs"
cp deploy/certs/server.crt "$secret_dir/server.crt"
(umask 077 && cp deploy/certs/server.key "$secret_dir/server.key")

hash_of() { cat "$@" | sha256sum | cut -c1-12; }
export WWWS_SWARM_BUILD=$ROOT/$secret_dir
export WWWS_SECRETS_VERSION
WWWS_SECRETS_VERSION=$(hash_of "$secret_dir"/token_secret "$secret_dir"/backplane_url \
    "$secret_dir"/redis_password "$secret_dir"/ticker_api_key "$secret_dir"/admin_api_key \
    "$secret_dir"/server.key)
export WWWS_CONFIGS_VERSION
WWWS_CONFIGS_VERSION=$(hash_of traefik/dynamic/middlewares.yml deploy/swarm/tls.yml \
    "$secret_dir"/server.crt deploy/swarm/prometheus.yml deploy/prometheus/rules.yml \
    deploy/swarm/redis-node.sh deploy/swarm/sentinel.sh deploy/swarm/sentinel-ready.sh)

export WWWS_APP_IMAGE=${WWWS_APP_IMAGE:-wwws-app:dev}
for image in "$WWWS_APP_IMAGE" "${WWWS_TRAEFIK_IMAGE:-traefik:v3.7}" "${WWWS_REDIS_IMAGE:-redis:7}" \
    "${WWWS_PROMETHEUS_IMAGE:-prom/prometheus:v2.53.2}"; do
    docker image inspect "$image" >/dev/null 2>&1 \
        || echo "[swarm] note: $image is not on this engine; every node must pull it from a registry"
done
if [ -z "${DOCKER_GID:-}" ] || [ -n "${DOCKER_HOST:-}" ]; then
    # the group of the socket on the manager itself (the engine we talk to), not this machine's
    DOCKER_GID=$(docker run --rm --network none -v /var/run/docker.sock:/var/run/docker.sock:ro \
        --entrypoint python "$WWWS_APP_IMAGE" -c "import os; print(os.stat('/var/run/docker.sock').st_gid)")
fi
export DOCKER_GID
nodes=$(docker node ls -q | wc -l)
# The three Redis data nodes go to three different machines (stack.yaml pins redis-N to
# the node labelled wwws.redis-N=true). A label already set (by you, or an earlier deploy)
# is kept; the missing ones go to the nodes holding the fewest, so with fewer than three
# nodes some share one.
for i in 1 2 3; do
    [ -z "$(docker node ls -q --filter "node.label=wwws.redis-$i=true")" ] || continue
    # shellcheck disable=SC2046
    target=$(docker node inspect --format '{{.ID}} {{len .Spec.Labels}} {{range $k, $v := .Spec.Labels}}{{$k}} {{end}}' $(docker node ls -q) \
        | awk '{n = 0; for (i = 3; i <= NF; i++) if ($i ~ /^wwws\.redis-/) n++; print n, $1}' | sort -n -k1,1 | head -n1 | cut -d' ' -f2)
    docker node update --label-add "wwws.redis-$i=true" "$target" >/dev/null
    step "Redis data node redis-$i placed on node $(docker node inspect --format '{{.Description.Hostname}}' "$target") (label wwws.redis-$i=true)"
done
export WWWS_TRAEFIK_REPLICAS=${WWWS_TRAEFIK_REPLICAS:-$((nodes < 2 ? 1 : 2))}
export WWWS_SCALER_REPLICAS=$([ "${WWWS_SCALER:-0}" = 1 ] && echo 1 || echo 0)
step "deploying stack '$WWWS_STACK' on $nodes node(s): Traefik x$WWWS_TRAEFIK_REPLICAS, scaler $([ "$WWWS_SCALER_REPLICAS" = 1 ] && echo on || echo off)"
docker stack deploy --prune -c deploy/swarm/stack.yaml "$WWWS_STACK" | sed 's/^/[swarm]   /'

# Wait until every service runs what it should (replicas n/n). A progress line every 10 s.
deadline=$((SECONDS + ${WWWS_DEPLOY_TIMEOUT:-240}))
last=0
while :; do
    # not yet: fewer tasks running than wanted, or a rolling update still under way
    pending=$(docker service ls --filter "label=com.docker.stack.namespace=$WWWS_STACK" \
        --format '{{.Name}} {{.Replicas}}' | awk '{split($2, r, "/"); sub(/ .*/, "", r[2]); if (r[1] != r[2]) print $1 "(" $2 ")"}')
    ids=$(docker service ls -q --filter "label=com.docker.stack.namespace=$WWWS_STACK")
    # shellcheck disable=SC2086
    pending="$pending $(docker service inspect --format '{{.Spec.Name}} {{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' $ids \
        | awk '$2 == "updating" || $2 == "rollback_started" {print $1 "(updating)"}')"
    pending=$(echo $pending)
    [ -n "$pending" ] || break
    if [ $SECONDS -ge $deadline ]; then
        docker stack ps --no-trunc --filter desired-state=running "$WWWS_STACK" | grep -v Running >&2 || true
        die "not converged in ${WWWS_DEPLOY_TIMEOUT:-240}s: $pending (docker stack ps $WWWS_STACK)"
    fi
    if [ $((SECONDS - last)) -ge 10 ]; then step "waiting for: $pending"; last=$SECONDS; fi
    sleep 2
done
failed=$(docker service inspect --format '{{.Spec.Name}} {{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' $ids \
    | awk '$2 == "rollback_completed" || $2 == "paused" {print $1 "(" $2 ")"}')
[ -z "$failed" ] || die "an update did not take: $(echo $failed) (docker service inspect --pretty NAME)"
step "stack '$WWWS_STACK' is up: docker stack services $WWWS_STACK"
