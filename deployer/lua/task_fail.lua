-- End a run that failed: status, reason, lease, slot and event together.
-- KEYS: task, plan, lease, inflight, events
-- ARGV: token, stage_name, now_ms, reason, events_maxlen,
--       plan_id, tenant_id (as the message says: checked against the stored task)
local task_key, plan_key, lease_key, inflight_key, events_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, stage_name, now, reason, maxlen = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local t = redis.call('HMGET', task_key, 'token', 'status', 'taskId', 'tenantId', 'planId')
if forged(t[3], t[5], t[4], ARGV[6], ARGV[7]) then return {'FORGED', (t[5] or '') .. '/' .. (t[4] or '')} end
if t[1] ~= token then return {'STALE', t[2] or ''} end
local status = t[2]
local new_status
if status == 'ROLLING_BACK' then new_status = 'ROLLBACK_FAILED'
elseif status == 'RUNNING' or status == 'PENDING' then
  if redis.call('HGET', task_key, 'runKind') == 'ROLLBACK' then new_status = 'ROLLBACK_FAILED' else new_status = 'FAILED' end
else return {'STALE', status} end
local old = change_status(task_key, plan_key, new_status, now)
redis.call('HSET', task_key, 'lastError', reason, 'endedAt', now, 'failedStage', stage_name)
release(task_key, lease_key, inflight_key, plan_key, token, t[3])
emit(events_key, maxlen, {'type', 'TASK_' .. new_status, 'planId', t[5], 'taskId', t[3],
  'tenantId', t[4], 'stage', stage_name, 'from', old, 'to', new_status, 'reason', reason, 'ts', now})
return {new_status, old}
