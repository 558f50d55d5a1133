-- A durable publication is held by the replicas: let readers see it, then deliver it live.
-- KEYS[1] the channel's hash. ARGV: the publication's epoch, its offset, the pub/sub
-- channel, the live message. 'durable' only grows, and only within the same stream (the
-- stream may have been lost and restarted meanwhile). WAIT covered every write before
-- this one's, so every offset up to it is held too.
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then
  local durable = tonumber(redis.call('HGET', KEYS[1], 'durable') or 0)
  if tonumber(ARGV[2]) > durable then redis.call('HSET', KEYS[1], 'durable', ARGV[2]) end
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
