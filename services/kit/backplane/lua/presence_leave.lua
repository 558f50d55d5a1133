-- KEYS as in presence_join.lua; ARGV: user, conn, group.
redis.call('SREM', KEYS[3], ARGV[3] .. '\31' .. ARGV[1] .. '\31' .. ARGV[2])
local removed = redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return removed
end
-- the user stays until their longest-lived remaining connection expires
local latest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('ZADD', KEYS[1], latest[2], ARGV[1])
return 0
