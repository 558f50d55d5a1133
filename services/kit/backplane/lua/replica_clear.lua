-- Remove up to ARGV[2] entries of a dead replica (ARGV[1]) from its index KEYS[1], each as
-- presence_leave.lua would; once the index is empty, drop the replica from the registry
-- KEYS[2]. Returns {entries left, group, user, group, user...}: the users now absent.
-- (Group keys are built here from the entries: standalone Redis or Sentinel, not Cluster.)
local gone = {}
for _, entry in ipairs(redis.call('SPOP', KEYS[1], tonumber(ARGV[2]))) do
  local a = string.find(entry, '\31', 1, true)
  local b = string.find(entry, '\31', a + 1, true)
  local group, user, conn = string.sub(entry, 1, a - 1), string.sub(entry, a + 1, b - 1), string.sub(entry, b + 1)
  local group_key = 'wwws:presence:{' .. group .. '}'
  local user_key = group_key .. ':u:' .. user
  redis.call('ZREM', user_key, conn)
  redis.call('ZREMRANGEBYSCORE', user_key, '-inf', now)
  if redis.call('ZCARD', user_key) == 0 then
    if redis.call('ZREM', group_key, user) == 1 then
      gone[#gone + 1] = group
      gone[#gone + 1] = user
    end
  else
    local latest = redis.call('ZRANGE', user_key, -1, -1, 'WITHSCORES')
    redis.call('ZADD', group_key, latest[2], user)
  end
end
local left = redis.call('SCARD', KEYS[1])
if left == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
table.insert(gone, 1, left)
return gone
