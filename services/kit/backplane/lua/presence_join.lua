-- KEYS[1] the group's ZSET (user -> latest expiry of any of their connections),
-- KEYS[2] the user's ZSET in that group (connection -> expiry), KEYS[3] the owning
-- replica's index of its entries. ARGV: user, conn, TTL ms, group.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local before = redis.call('ZCARD', KEYS[2])
local expiry = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], expiry, ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], 'GT', expiry, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4] .. '\31' .. ARGV[1] .. '\31' .. ARGV[2])
if before == 0 then return 1 end
return 0
