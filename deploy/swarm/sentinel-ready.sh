#!/bin/sh
# The health check of a Sentinel of the Swarm stack (stack.yaml): healthy once it is ready
# to fail the primary over: it sees the primary up, knows every replica the primary has
# and at least one other Sentinel (the quorum of 2 needs one more vote). A Sentinel learns
# replicas from the primary's INFO (every 10 s) and other Sentinels from their hellos, so
# for several seconds after a deploy it may know none: a primary lost then is replaced
# late or never. Swarm counts a task as running only once it is healthy, so deploy.sh's
# wait (and a rolling update) waits for this. Checked until it holds once, then healthy
# for good: a Sentinel must never be restarted for the state of what it watches.
set -eu
ready=/tmp/failover-ready
[ -f "$ready" ] && exit 0
view=$(redis-cli -p 26379 sentinel master wwws)
# the reply is field names and values on alternate lines
field() { printf '%s\n' "$view" | awk -v name="$1" 'previous == name {print; exit} {previous = $0}'; }
[ "$(field flags)" = master ] || { echo "the primary is not seen up: $(field flags)"; exit 1; }
others=$(field num-other-sentinels)
[ "${others:-0}" -ge 1 ] || { echo "no other Sentinel known yet"; exit 1; }
password=$(cat /run/secrets/wwws_redis_password)
connected=$(redis-cli --no-auth-warning -a "$password" -h "$(field ip)" -p "$(field port)" \
    info replication | tr -d '\r' | awk -F: '$1 == "connected_slaves" {print $2}')
known=$(field num-slaves)
[ -n "$connected" ] && [ "${known:-0}" -ge "$connected" ] \
    || { echo "knows ${known:-0} of the primary's ${connected:-?} replicas"; exit 1; }
touch "$ready"
echo "ready: the primary, $known replica(s), $others other Sentinel(s)"
