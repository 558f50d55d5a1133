#!/bin/sh
# A Redis Sentinel of the Swarm stack: watches the primary named WWWS_REDIS_PRIMARY (at
# start; after a failover it follows the promoted one), by DNS name, and announces itself
# and the data nodes by name to the services (redis-py's Sentinel client). Its config file
# must be writable: Sentinel records what it learns there.
set -eu
password=$(cat /run/secrets/wwws_redis_password)
conf=/tmp/sentinel.conf
cat >"$conf" <<CONF
port 26379
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel monitor wwws ${WWWS_REDIS_PRIMARY:-redis-1} 6379 2
sentinel auth-pass wwws $password
sentinel down-after-milliseconds wwws ${WWWS_SENTINEL_DOWN_AFTER_MS:-2000}
sentinel failover-timeout wwws 10000
sentinel parallel-syncs wwws 1
CONF
# the primary's name resolves only once its task runs: wait for it (Sentinel refuses a
# monitor line it cannot resolve)
i=0
until getent hosts "${WWWS_REDIS_PRIMARY:-redis-1}" >/dev/null 2>&1; do
    i=$((i + 1)); [ "$i" -lt 120 ] || { echo "sentinel: ${WWWS_REDIS_PRIMARY:-redis-1} never resolved" >&2; exit 1; }
    sleep 1
done
exec redis-server "$conf" --sentinel
