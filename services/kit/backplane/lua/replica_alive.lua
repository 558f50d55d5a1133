-- KEYS[1] the service's replica registry (ZSET node -> liveness expiry); ARGV: node, TTL ms.
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
