-- Checkpoint a completed stage; on the last one, finish the task in the same round trip.
-- KEYS: task, plan, lease, inflight, events, plan queue
-- ARGV: token, stage_index, stage_name, now_ms, ctx_json, is_last, final_status, events_maxlen, lease_ttl_ms,
--       plan_id, tenant_id (as the message says: checked against the stored task)
local task_key, plan_key, lease_key, inflight_key, events_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, stage_index, stage_name, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local ctx_json, is_last, final_status, maxlen, ttl = ARGV[5], ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])

local t = redis.call('HMGET', task_key, 'token', 'status', 'taskId', 'tenantId', 'planId',
  'stageStartedAt')
if forged(t[3], t[5], t[4], ARGV[10], ARGV[11]) then return {'FORGED', (t[5] or '') .. '/' .. (t[4] or '')} end
if t[1] ~= token then return {'STALE', t[2] or ''} end
if t[2] ~= 'RUNNING' and t[2] ~= 'ROLLING_BACK' then return {'STALE', t[2]} end
local task_id, tenant_id, plan_id = t[3], t[4], t[5]
-- The lease may have expired during a slow stage. Free: nobody ran in between, take it back.
-- Taken by another run: that run may have overwritten this stage's work, so this one must
-- not checkpoint or complete; it stays in the reconciler's watch list and runs again later.
local holder = redis.call('GET', lease_key)
if not holder then
  redis.call('SET', lease_key, token, 'PX', ttl)
elseif holder ~= token then
  return {'STALE', 'lease lost'}
end
redis.call('HSET', task_key, 'checkpoint', stage_index, 'ctx', ctx_json, 'updatedAt', now)
if t[6] then stage_timed(stage_name, t[6], now) end
emit(events_key, maxlen, {'type', 'STAGE_COMPLETED', 'planId', plan_id, 'taskId', task_id,
  'tenantId', tenant_id, 'stage', stage_name, 'stageIndex', stage_index, 'ts', now})
if is_last ~= '1' then
  if redis.call('GET', lease_key) == token then redis.call('PEXPIRE', lease_key, ttl) end
  redis.call('ZADD', inflight_key, now + ttl, task_id)
  return {'OK'}
end
local old = change_status(task_key, plan_key, final_status, now)
redis.call('HSET', task_key, 'endedAt', now)
release(task_key, lease_key, inflight_key, plan_key, token, task_id)
emit(events_key, maxlen, {'type', 'TASK_' .. final_status, 'planId', plan_id, 'taskId', task_id,
  'tenantId', tenant_id, 'from', old, 'to', final_status, 'ts', now})
-- Tell the caller whether a task waits for the slot just freed, or the plan's wave step is
-- due (this task ended its wave): no fill round trip otherwise.
local waiting = redis.call('LLEN', KEYS[6])
if redis.call('ZSCORE', K_PLAN_TIMERS, plan_id) then waiting = waiting + 1 end
return {'DONE', old, tostring(waiting)}
