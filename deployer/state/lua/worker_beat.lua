-- A worker's heartbeat: refresh its key, keep it registered, and name the registered workers
-- whose key is gone (they died without a clean shutdown, which deletes both).
-- Also keeps the list of stage messages the worker holds (task id -> token): what it must
-- give back if it dies, whoever ran those tasks' previous stage.
-- KEYS: this worker's heartbeat key, the registry (zset node -> last beat ms), its holds hash
-- ARGV: node, now_ms, ttl_ms, heartbeat key prefix, holds_ttl_ms, replace ('1': the holds
--       are exactly what follows), n_add, add task_id/token pairs..., removed task ids...
-- Returns the nodes whose heartbeat is gone.
local beat_key, registry, holds_key = KEYS[1], KEYS[2], KEYS[3]
local node, now, ttl, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local holds_ttl, replace, n_add = ARGV[5], ARGV[6], tonumber(ARGV[7])
if replace == '1' then redis.call('DEL', holds_key) end
for i = 8, 7 + 2 * n_add, 2 do redis.call('HSET', holds_key, ARGV[i], ARGV[i + 1]) end
for i = 8 + 2 * n_add, #ARGV do redis.call('HDEL', holds_key, ARGV[i]) end
if redis.call('EXISTS', holds_key) == 1 then redis.call('PEXPIRE', holds_key, holds_ttl) end
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
