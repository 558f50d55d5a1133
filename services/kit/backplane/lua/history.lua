-- Read a window of a channel stream; writes nothing (a missing channel stays missing).
-- KEYS[1] the channel's hash, KEYS[2] its stream.
-- ARGV: bound ('' = none; forward: the first offset wanted, reverse: the offset to stay
-- below), limit, '1' for reverse, max age ms.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {'', 0, 1, {}} end
local top = tonumber(redis.call('HGET', KEYS[1], 'top'))
-- With durable publishing, only what the replicas hold is read (confirm.lua): a reader
-- never holds a publication that a failover could lose and give its offset to another.
local durable = redis.call('HGET', KEYS[1], 'durable')
if durable then top = math.min(top, tonumber(durable)) end
local start = window_start(KEYS[2], tonumber(ARGV[4]))
local limit = tonumber(ARGV[2])
local entries = {}
if start and start <= top and limit > 0 then
  if ARGV[3] == '1' then
    local upper = top
    if ARGV[1] ~= '' then upper = math.min(upper, tonumber(ARGV[1]) - 1) end
    if upper >= start then
      entries = redis.call('XREVRANGE', KEYS[2], entry_id(upper), entry_id(start), 'COUNT', limit)
    end
  else
    local from = start
    if ARGV[1] ~= '' and tonumber(ARGV[1]) > from then from = tonumber(ARGV[1]) end
    entries = redis.call('XRANGE', KEYS[2], entry_id(from), entry_id(top), 'COUNT', limit)
  end
end
return {epoch, top, start or (top + 1), entries}
