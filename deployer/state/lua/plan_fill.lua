-- Hand free concurrency slots of a plan to waiting tasks; return what the caller must send.
-- KEYS: plan, queue, inflight, plan timers
-- ARGV: now_ms, lease_ttl_ms, task_key_prefix, max_batch, plan_id
-- Returns per task: task_id, token, run_id, run_json, ctx_json, config_json. A task never
-- dispatched before has no run yet: run_json and ctx_json are '' and the caller builds the
-- run from config_json (sent only then). One more last element, 'DUE', says the plan's
-- wave step is due (deployer/waves.py): the caller runs it.
-- With a strategy, a task of a wave after the current one is dropped from the queue (a
-- resumed or retried task queued early): its wave queues it when it starts; once the waves
-- are HALTED, so is a forward run of a tenant that never started (the plan's rollback
-- cancels it).
local plan_key, queue_key, inflight_key = KEYS[1], KEYS[2], KEYS[3]
local now, ttl, prefix, max_batch = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local p = redis.call('HMGET', plan_key, 'maxConcurrency', 'inflight', 'control', 'wave', 'waveState')
if not p[1] then return {} end
local score = redis.call('ZSCORE', KEYS[4], ARGV[5])
local due = score and tonumber(score) <= now
if p[3] == 'PAUSE' or p[3] == 'CANCEL' then
  if due then return {'DUE'} end
  return {}
end
local current = tonumber(p[4] or '-1')
local halted = p[5] == 'HALTED'
local free = tonumber(p[1]) - tonumber(p[2] or '0')
if free > max_batch then free = max_batch end
local out = {}
while free > 0 do
  local task_id = redis.call('LPOP', queue_key)
  if not task_id then break end
  local task_key = prefix .. task_id
  local t = redis.call('HMGET', task_key, 'status', 'runId', 'run', 'ctx', 'slot', 'config', 'wave',
    'runKind', 'startedAt')
  -- halted waves (a plan rollback) start no tenant that never started (stage_begin cancels one)
  local held = halted and t[8] ~= 'ROLLBACK' and not t[9]
  if t[1] == 'PENDING' and t[5] ~= '1' and not held and (not t[7] or tonumber(t[7]) <= current) then
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
if due then out[#out + 1] = 'DUE' end
return out
