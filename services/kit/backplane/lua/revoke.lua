-- KEYS[1] the user's revocation key. ARGV[1]: how long to keep it, ms. Returns now (ms).
redis.call('SET', KEYS[1], now, 'PX', ARGV[1])
return now
