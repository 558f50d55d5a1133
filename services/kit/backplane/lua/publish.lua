-- Append one publication. KEYS[1] the channel's hash (epoch, top), KEYS[2] its stream,
-- KEYS[3] (optional) the idempotency key of this publication.
-- ARGV: data, a fresh epoch, max length, TTL ms, pub/sub channel, max age ms.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local max_age = tonumber(ARGV[6])
if epoch and KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  local start = window_start(KEYS[2], max_age)
  if seen and start and tonumber(seen) >= start then
    return {epoch, tonumber(seen)}
  end
end
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
local clock = redis.call('TIME')
local now_ms = clock[1] * 1000 + math.floor(clock[2] / 1000)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], entry_id(top), 'd', ARGV[1], 't', now_ms)
if max_age > 0 then
  local start = window_start(KEYS[2], max_age)
  if start then redis.call('XTRIM', KEYS[2], 'MINID', entry_id(start)) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if KEYS[3] then redis.call('SET', KEYS[3], top, 'PX', ARGV[4]) end
redis.call('PUBLISH', ARGV[5], epoch .. ':' .. top .. ':' .. ARGV[1])
return {epoch, top}
