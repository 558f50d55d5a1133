#!/usr/bin/env bash
# Is the stack usable from the outside? `docker compose up --wait` only proves that every
# container's own health check passes; the published port in front of them (Traefik's :443
# as the host sees it) can still be dead, e.g. a userland proxy that ran out of file
# descriptors. This checks both, and says which one is wrong.
#
# Usage: deploy/check.sh PUBLIC_URL   (the Makefile passes WWWS_PUBLIC_URL; COMPOSE is the
# compose command with the stack's settings, default `docker compose`)
set -uo pipefail

url=${1:?usage: deploy/check.sh PUBLIC_URL}
compose=${COMPOSE:-docker compose}
ca=deploy/certs/ca.crt
say() { printf '[check] %s\n' "$*"; }

problems=0
unhealthy=$($compose ps --all --format '{{.Name}} {{.State}} {{.Health}}' 2>/dev/null |
    awk '$2 != "running" || ($3 != "" && $3 != "healthy") {print $1 " (" $2 (($3 != "") ? ", " $3 : "") ")"}')
running=$($compose ps --format '{{.Name}}' 2>/dev/null | wc -l)
if [ "$running" -eq 0 ]; then
    say "no container of this stack is running: start it with make up"
    exit 1
fi
if [ -n "$unhealthy" ]; then
    say "containers not healthy:"
    printf '%s\n' "$unhealthy" | sed 's/^/          /'
    problems=1
else
    say "containers: $running running, every health check passing"
fi

for path in / /chat/ /ticker/ /telephony/; do
    status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$ca" "$url$path" 2>&1)
    if [ "$status" = 200 ]; then
        say "$url$path answers 200"
    else
        say "$url$path does not answer (curl: $status)"
        problems=1
    fi
done

if [ "$problems" -ne 0 ] && [ -z "$unhealthy" ]; then
    say "every container is healthy but the public URL does not answer: the published port is"
    say "broken between the host and Traefik (docker-proxy dead or out of file descriptors?"
    say "deploy/provision.sh sets \"userland-proxy\": false in /etc/docker/daemon.json for this)."
fi
exit "$problems"
