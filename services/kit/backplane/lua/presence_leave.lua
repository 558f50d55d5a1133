-- Leave one or more connections: KEYS as in presence_join.lua, three per entry; ARGV per
-- entry user, conn, group. Returns per entry 1 if it was the user's last connection in
-- the group (and it was there).
local left = {}
for i = 0, #KEYS / 3 - 1 do
  local group_key, user_key, index = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  local user, conn, group = ARGV[i * 3 + 1], ARGV[i * 3 + 2], ARGV[i * 3 + 3]
  redis.call('SREM', index, group .. '\31' .. user .. '\31' .. conn)
  local removed = redis.call('ZREM', user_key, conn)
  redis.call('ZREMRANGEBYSCORE', user_key, '-inf', now)
  if redis.call('ZCARD', user_key) == 0 then
    redis.call('ZREM', group_key, user)
    left[#left + 1] = removed
  else
    -- the user stays until their longest-lived remaining connection expires
    local latest = redis.call('ZRANGE', user_key, -1, -1, 'WITHSCORES')
    redis.call('ZADD', group_key, latest[2], user)
    left[#left + 1] = 0
  end
end
return left
