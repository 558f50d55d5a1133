-- Re-assert entries: extend them, or create them again when the store lost them (no
-- 'XX'), so a Redis that lost its data is repaired within one refresh.
-- KEYS: (group, user, replica index) key triples; ARGV[1] TTL ms, then user, conn, group
-- per triple. Returns the numbers (1-based) of the triples whose user was absent before.
local expiry = now + tonumber(ARGV[1])
local absent = {}
for i = 1, #KEYS, 3 do
  local user, conn, group = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  redis.call('ZREMRANGEBYSCORE', KEYS[i + 1], '-inf', now)
  if redis.call('ZCARD', KEYS[i + 1]) == 0 then absent[#absent + 1] = (i + 2) / 3 end
  redis.call('ZADD', KEYS[i + 1], expiry, conn)
  redis.call('PEXPIRE', KEYS[i + 1], ARGV[1])
  redis.call('ZADD', KEYS[i], 'GT', expiry, user)
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
  redis.call('SADD', KEYS[i + 2], group .. '\31' .. user .. '\31' .. conn)
end
return absent
