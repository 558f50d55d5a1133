-- Append one publication. KEYS[1] the channel's hash (epoch, top), KEYS[2] its stream,
-- KEYS[3] its idempotency keys (key -> offset; only for entries still in the window).
-- ARGV: data, a fresh epoch, max length, TTL ms, pub/sub channel, max age ms,
-- idempotency key ('' for none), '1' to PUBLISH it live here ('0': the caller publishes
-- once replicas hold it, see broker_redis). Returns {epoch, offset, 1 if stored now}.
-- one read for both: 'durable' is the mark durable publishing keeps (see below)
local head = redis.call('HMGET', KEYS[1], 'epoch', 'durable')
local epoch, durable = head[1], head[2]
local max_length = tonumber(ARGV[3])
local max_age = tonumber(ARGV[6])
local key = ARGV[7]
if epoch and key ~= '' then
  local seen = redis.call('HGET', KEYS[3], key)
  local start = window_start(KEYS[2], max_age)
  if seen and start and tonumber(seen) >= start then
    -- a write, so that a WAIT after this covers the first attempt's entry too
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    return {epoch, tonumber(seen), 0}
  end
end
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  -- durable publishing: readers see up to 'durable', which confirm.lua raises once the
  -- replicas hold a publication (history.lua)
  if ARGV[8] == '0' then redis.call('HSET', KEYS[1], 'durable', 0) end
elseif ARGV[8] == '0' and not durable then
  -- a stream written before durable publishing was on: what it holds stays readable
  redis.call('HSET', KEYS[1], 'durable', redis.call('HGET', KEYS[1], 'top'))
end

-- Entries leaving the window take their idempotency keys with them, so the keys kept
-- never outnumber the window, however many a client sends.
local function drop_entries(entries)
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'k' then redis.call('HDEL', KEYS[3], fields[i + 1]) end
    end
  end
  if #entries > 0 then
    local last = entry_offset(entries[#entries][1])
    redis.call('XTRIM', KEYS[2], 'MINID', entry_id(last + 1))
  end
end

local excess = redis.call('XLEN', KEYS[2]) + 1 - max_length
if excess > 0 then drop_entries(redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', excess)) end
local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
local clock = redis.call('TIME')
local now_ms = clock[1] * 1000 + math.floor(clock[2] / 1000)
if key ~= '' then
  redis.call('XADD', KEYS[2], entry_id(top), 'd', ARGV[1], 't', now_ms, 'k', key)
  redis.call('HSET', KEYS[3], key, top)
else
  redis.call('XADD', KEYS[2], entry_id(top), 'd', ARGV[1], 't', now_ms)
end
if max_age > 0 then
  local start = window_start(KEYS[2], max_age)
  drop_entries(redis.call('XRANGE', KEYS[2], '-', '(' .. entry_id(start)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
if ARGV[8] == '1' then
  -- durable acks turned off on a stream written with them: readers must no longer stop
  -- at the old mark, which nothing raises now. After the XADD, not first: a script's
  -- first write is where Redis refuses it when out of memory, and HDEL never is.
  if durable then redis.call('HDEL', KEYS[1], 'durable') end
  redis.call('PUBLISH', ARGV[5], epoch .. ':' .. top .. ':' .. ARGV[1])
end
return {epoch, top, 1}
