-- Hand free concurrency slots of a plan to waiting tasks; return what the caller must send.
-- KEYS: plan, queue, inflight
-- ARGV: now_ms, lease_ttl_ms, task_key_prefix, max_batch
-- Returns per task: task_id, token, run_id, run_json, ctx_json, config_json. A task never
-- dispatched before has no run yet: run_json and ctx_json are '' and the caller builds the
-- run from config_json (sent only then).
local plan_key, queue_key, inflight_key = KEYS[1], KEYS[2], KEYS[3]
local now, ttl, prefix, max_batch = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local p = redis.call('HMGET', plan_key, 'maxConcurrency', 'inflight', 'control')
if not p[1] then return {} end
if p[3] == 'PAUSE' or p[3] == 'CANCEL' then return {} end
local free = tonumber(p[1]) - tonumber(p[2] or '0')
if free > max_batch then free = max_batch end
local out = {}
while free > 0 do
  local task_id = redis.call('LPOP', queue_key)
  if not task_id then break end
  local task_key = prefix .. task_id
  local t = redis.call('HMGET', task_key, 'status', 'runId', 'run', 'ctx', 'slot', 'config')
  if t[1] == 'PENDING' and t[5] ~= '1' then
    local gen = redis.call('HINCRBY', task_key, 'gen', 1)
    local token = t[2] .. '.' .. gen
    redis.call('HSET', task_key, 'token', token, 'slot', '1', 'dispatchedAt', now)
    redis.call('HINCRBY', plan_key, 'inflight', 1)
    redis.call('ZADD', inflight_key, now + ttl, task_id)
    out[#out + 1] = task_id
    out[#out + 1] = token
    out[#out + 1] = t[2]
    out[#out + 1] = t[3] or ''
    out[#out + 1] = t[4] or ''
    if t[3] and t[3] ~= '' then out[#out + 1] = '' else out[#out + 1] = t[6] or '' end
    free = free - 1
  end
end
return out
