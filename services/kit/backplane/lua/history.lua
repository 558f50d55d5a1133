-- Read a window of a channel stream; writes nothing (a missing channel stays missing).
-- KEYS[1] the channel's hash, KEYS[2] its stream.
-- ARGV: bound ('' = none; forward: the first offset wanted, reverse: the offset to stay
-- below), limit, '1' for reverse, max age ms.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {'', 0, 1, {}} end
local top = tonumber(redis.call('HGET', KEYS[1], 'top'))
local start = window_start(KEYS[2], tonumber(ARGV[4]))
local limit = tonumber(ARGV[2])
local entries = {}
if start and limit > 0 then
  if ARGV[3] == '1' then
    local upper = '+'
    if ARGV[1] ~= '' then upper = '(' .. ARGV[1] .. '-0' end
    entries = redis.call('XREVRANGE', KEYS[2], upper, entry_id(start), 'COUNT', limit)
  else
    local from = start
    if ARGV[1] ~= '' and tonumber(ARGV[1]) > from then from = tonumber(ARGV[1]) end
    entries = redis.call('XRANGE', KEYS[2], entry_id(from), '+', 'COUNT', limit)
  end
end
return {epoch, top, start or (top + 1), entries}
