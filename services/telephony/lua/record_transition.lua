-- KEYS as in record_create.lua; ARGV[1] TTL ms, ARGV[2] expected states (comma-separated),
-- ARGV[3] '1' to release the guards, ARGV[4..] field/value pairs.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return nil end
local allowed = false
for s in string.gmatch(ARGV[2], '[^,]+') do
  if s == state then allowed = true end
end
if not allowed then return nil end
if #ARGV >= 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == KEYS[1] then
    if ARGV[3] == '1' then
      redis.call('DEL', KEYS[i])
    else
      redis.call('PEXPIRE', KEYS[i], ARGV[1])
    end
  end
end
return redis.call('HGETALL', KEYS[1])
