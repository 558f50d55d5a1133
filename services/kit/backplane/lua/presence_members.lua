-- KEYS[1] the group's ZSET.
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
