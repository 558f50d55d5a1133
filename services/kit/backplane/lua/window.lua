-- Shared by the stream scripts. Offsets become stream ids '<offset>-0'; '%.0f' keeps
-- them exact up to 2^53 (plain concatenation would print large numbers as 1e+15).
local function entry_id(offset)
  return string.format('%.0f', offset) .. '-0'
end

local function entry_offset(id)
  return tonumber(string.match(id, '^(%d+)'))
end

-- The offset of the oldest entry still in the window (nil: none). Entries carry their
-- publish time in field 't'; with an age limit (ms, 0 = none) older ones do not count.
local function window_start(stream, max_age)
  if max_age <= 0 then
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
    if #oldest == 0 then return nil end
    return entry_offset(oldest[1][1])
  end
  local clock = redis.call('TIME')
  local cutoff = clock[1] * 1000 + math.floor(clock[2] / 1000) - max_age
  local from = '-'
  while true do
    local batch = redis.call('XRANGE', stream, from, '+', 'COUNT', 64)
    if #batch == 0 then return nil end
    for _, entry in ipairs(batch) do
      if tonumber(entry[2][4]) >= cutoff then return entry_offset(entry[1]) end
    end
    from = entry_id(entry_offset(batch[#batch][1]) + 1)
  end
end
