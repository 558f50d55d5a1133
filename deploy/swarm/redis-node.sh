#!/bin/sh
# A Redis data node of the Swarm stack (deploy/swarm/stack.yaml): redis-server with the
# password from the stack's secret, announcing itself by its service name (a stable DNS name:
# the task's address changes when Swarm reschedules it) and, for a replica, following
# WWWS_REPLICA_OF at start. After that the sentinels decide who is primary.
set -eu
password=$(cat /run/secrets/wwws_redis_password)
set -- --port 6379 --dir /data --protected-mode no \
    --appendonly yes --appendfsync everysec --aof-use-rdb-preamble yes \
    --maxmemory "${WWWS_REDIS_MAXMEMORY:-512mb}" --maxmemory-policy noeviction \
    --requirepass "$password" --masterauth "$password" \
    --user wwws on ">$password" '~*' '&*' '+@all' \
    --replica-announce-ip "$WWWS_REDIS_NAME"
if [ -n "${WWWS_REPLICA_OF:-}" ]; then
    set -- "$@" --replicaof "$WWWS_REPLICA_OF" 6379
fi
exec redis-server "$@"
