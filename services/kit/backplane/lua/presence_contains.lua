-- KEYS[1] the group's ZSET; ARGV the users asked about.
local out = {}
for i, user in ipairs(ARGV) do
  local score = redis.call('ZSCORE', KEYS[1], user)
  if score and tonumber(score) > now then out[i] = 1 else out[i] = 0 end
end
return out
