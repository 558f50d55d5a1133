-- Join one or more connections, each with three KEYS and four ARGV (presence_redis.py
-- sends the joins of one loop iteration together). Per entry: KEYS the group's ZSET
-- (user -> latest expiry of any of their connections), the user's ZSET in that group
-- (connection -> expiry), the owning replica's index of its entries; ARGV user, conn,
-- TTL ms, group. Returns per entry 1 if the user had no live connection in the group.
local joined = {}
for i = 0, #KEYS / 3 - 1 do
  local group_key, user_key, index = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  local user, conn, ttl, group = ARGV[i * 4 + 1], ARGV[i * 4 + 2], ARGV[i * 4 + 3], ARGV[i * 4 + 4]
  redis.call('ZREMRANGEBYSCORE', user_key, '-inf', now)
  local before = redis.call('ZCARD', user_key)
  local expiry = now + tonumber(ttl)
  redis.call('ZADD', user_key, expiry, conn)
  redis.call('PEXPIRE', user_key, ttl)
  redis.call('ZADD', group_key, 'GT', expiry, user)
  redis.call('PEXPIRE', group_key, ttl)
  redis.call('SADD', index, group .. '\31' .. user .. '\31' .. conn)
  joined[#joined + 1] = (before == 0) and 1 or 0
end
return joined
