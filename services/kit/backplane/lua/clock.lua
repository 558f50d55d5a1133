-- Shared by the presence scripts: Redis's own time in ms, the same for every replica.
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
