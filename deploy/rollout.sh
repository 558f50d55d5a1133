#!/usr/bin/env bash
# Replace every replica of one service without downtime (make rollout S=chat).
#
# `docker compose up -d --force-recreate chat` stops every replica at once: for the seconds
# the new ones take to start, nobody is served. This does it one replica at a time:
#   1. start one more container of the service (the current image and settings),
#   2. wait until it is healthy and Traefik has it in its pool,
#   3. stop one old container with SIGTERM: it drains (readiness 503, then its clients get
#      1001 and reconnect at once, to the other replicas), and remove it,
# until no old container is left. The replica count is the same at the end; it is one more
# while a new one starts. If a new container does not get healthy, the rollout stops there,
# removes it and leaves the old ones serving (exit 1).
#
# Usage: deploy/rollout.sh SERVICE   (COMPOSE: the compose command with the stack's
# settings, default `docker compose`; ROLLOUT_HEALTHY_TIMEOUT seconds, default 90;
# ROLLOUT_SETTLE seconds Traefik gets to add a new replica, default 3;
# ROLLOUT_STOP_TIMEOUT seconds an old replica may take to drain before SIGKILL, default 20)
set -euo pipefail

service=${1:?usage: deploy/rollout.sh SERVICE (e.g. chat)}
compose=${COMPOSE:-docker compose}
healthy_timeout=${ROLLOUT_HEALTHY_TIMEOUT:-90}
settle=${ROLLOUT_SETTLE:-3}
grace=${ROLLOUT_STOP_TIMEOUT:-20}  # as compose.yaml's stop_grace_period: the drain fits in it
T0=$(date +%s)
say() { printf '[rollout] %s\n' "$*"; }
die() { printf '[rollout] ERROR: %s\n' "$*" >&2; exit 1; }

case $service in
    redis | traefik | prometheus | nginx)
        die "$service is not a replicated app service: restart it with docker compose up -d $service" ;;
esac

running_ids() { $compose ps -q "$service" 2>/dev/null | sort; }

mapfile -t old < <(running_ids)
count=${#old[@]}
[ "$count" -gt 0 ] || die "no running container of '$service' (is the stack up? make up)"
say "$service: $count replica(s) to replace, one at a time"

health_of() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null || echo gone; }

step=0
for victim in "${old[@]}"; do
    step=$((step + 1))
    # 1. one more container, the old ones kept as they are
    if ! out=$($compose up -d --no-deps --no-recreate --scale "$service=$((count + 1))" "$service" 2>&1); then
        printf '%s\n' "$out" | tail -n 5 >&2
        die "step $step/$count: docker compose could not start a new $service container"
    fi
    new=$(comm -13 <(printf '%s\n' "${old[@]}" | sort) <(running_ids) | head -n1)
    [ -n "$new" ] || die "step $step/$count: no new $service container appeared"
    say "step $step/$count: started ${new:0:12}, waiting until it is healthy"
    # 2. healthy, then give Traefik its discovery and first health check
    waited=0
    until [ "$(health_of "$new")" = healthy ]; do
        state=$(health_of "$new")
        if [ "$state" = unhealthy ] || [ "$state" = exited ] || [ "$state" = gone ] || [ "$waited" -ge "$healthy_timeout" ]; then
            docker logs --tail 20 "$new" >&2 2>&1 || true
            docker rm -f "$new" >/dev/null 2>&1 || true
            die "step $step/$count: ${new:0:12} is $state after ${waited}s; removed it, the old replicas keep serving"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    sleep "$settle"
    # 3. drain and remove one old container
    say "step $step/$count: ${new:0:12} healthy after ${waited}s; draining ${victim:0:12} (SIGTERM, clients get 1001)"
    docker stop -t "$grace" "$victim" >/dev/null
    docker rm "$victim" >/dev/null
    old=("${old[@]:1}")
    old=("${old[@]}" "$new")  # counted among the running ones from now on
done
say "$service: $count replica(s) replaced in $(( $(date +%s) - T0 ))s"
