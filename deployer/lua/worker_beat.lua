-- A worker's heartbeat: refresh its key, keep it registered, and name the registered workers
-- whose key is gone (they died without a clean shutdown, which deletes both).
-- KEYS: this worker's heartbeat key, the registry (zset node -> last beat ms)
-- ARGV: node, now_ms, ttl_ms, heartbeat key prefix
-- Returns the nodes whose heartbeat is gone.
local beat_key, registry = KEYS[1], KEYS[2]
local node, now, ttl, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
-- Our own key gone too means we could not beat for a whole TTL: this worker stalled, or the
-- server did (a long script blocks every client). Everyone else missed their beats for the
-- same reason, so nobody is declared dead before they have had one beat to catch up.
local on_time = redis.call('EXISTS', beat_key) == 1
redis.call('SET', beat_key, now, 'PX', ttl)
redis.call('ZADD', registry, now, node)
if not on_time then return {} end
local dead = {}
for _, other in ipairs(redis.call('ZRANGE', registry, 0, -1)) do
  if redis.call('EXISTS', prefix .. other) == 0 then dead[#dead + 1] = other end
end
return dead
