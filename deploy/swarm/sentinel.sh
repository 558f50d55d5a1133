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

# Sentinels that know the data nodes by name must resolve a name to agree that its node is
# down: when a whole machine is lost, Swarm's DNS soon forgets the names of the tasks that
# ran there, and the Sentinels then never agree the primary is down (no failover while
# the name does not resolve: redis/redis#12753). So each data node's last known address
# stays in /etc/hosts, refreshed every second from Swarm's DNS (tasks.<name> is never in
# /etc/hosts, so it always asks the DNS): the name of a lost node still resolves (to an
# address that does not answer, which is what Sentinel needs to see), and a task that
# comes back elsewhere is found at its new address within a second.
keep_names() {
    while :; do
        for name in ${WWWS_REDIS_NODES:-}; do
            address=$(getent ahostsv4 "tasks.$name" 2>/dev/null | awk 'NR == 1 {print $1}')
            [ -n "$address" ] || continue
            grep -q "^$address $name\$" /etc/hosts && continue
            # rewritten in place: /etc/hosts is a file Docker mounts, it cannot be replaced
            { grep -v " $name\$" /etc/hosts; echo "$address $name"; } >/tmp/hosts.next
            cat /tmp/hosts.next >/etc/hosts
        done
        sleep 1
    done
}
if [ "$(id -u)" = 0 ]; then
    keep_names &
    chown redis "$conf"
    exec setpriv --reuid=redis --regid=redis --init-groups redis-server "$conf" --sentinel
fi
exec redis-server "$conf" --sentinel
