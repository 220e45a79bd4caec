-- Apply an operator's command to one task, compare-and-set on the status it was decided from.
-- KEYS: task, plan, queue, lease, inflight, events, applied (keys.APPLIED: who deployed the tenant last)
-- ARGV: expect_status, new_status ('' = none), control ('' | PAUSE | CANCEL | CLEAR),
--       queue_op ('' | FRONT | REMOVE | PUSH_FRONT | PUSH_BACK), invalidate ('1': new token,
--       release lease and slot), now_ms, by, reason, event_type, events_maxlen,
--       check_newer ('1': a run that would go back over a newer task's deployment ends
--       SUPERSEDED instead), n_fields, field, value, ...
-- FRONT and REMOVE first take the task's id out of the queue (LREM: a scan of the queue);
-- PUSH_FRONT and PUSH_BACK do not (a plan command working in slices: a stale entry is
-- skipped by the fill, which hands slots to PENDING tasks only).
-- Returns {'OK', status before} | {'REFUSED', status now} | {'SUPERSEDED', newer task id} |
-- {'ARCHIVING', status now}: retention is removing the task's plan from Redis (its events
-- stream goes last: an event written now would be lost); a moment later the task is gone
-- or kept live, and the command can be tried again.
local task_key, plan_key, queue_key, lease_key, inflight_key, events_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local expect, new_status, control, queue_op, invalidate = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, by, reason, event_type, maxlen = tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local check_newer = ARGV[11] == '1'

local t = redis.call('HMGET', task_key, 'status', 'token', 'taskId', 'tenantId', 'planId', 'control',
  'createdAt')
local status, token, task_id, tenant_id, plan_id = t[1], t[2] or '', t[3], t[4], t[5]
if status ~= expect then return {'REFUSED', status or ''} end
if redis.call('HGET', plan_key, 'archiving') == '1' then return {'ARCHIVING', status} end

if check_newer then
  -- Whose tenant is it? A newer task deployed it since: going back would overwrite that
  -- newer config (a failure budget's rollback once wrote v19 over a newer plan's v30).
  local newer = newer_task(redis.call('GET', KEYS[7]), t[7] or '0', task_id)
  if newer then
    release(task_key, lease_key, inflight_key, plan_key, token, task_id)
    local old = change_status(task_key, plan_key, 'SUPERSEDED', now)
    redis.call('HSET', task_key, 'supersededBy', newer, 'endedAt', now, 'progress', '')
    redis.call('HDEL', task_key, 'control', 'controlBy', 'controlReason')
    emit(events_key, maxlen, {'type', 'TASK_SUPERSEDED', 'planId', plan_id, 'taskId', task_id,
      'tenantId', tenant_id, 'from', old, 'to', 'SUPERSEDED', 'supersededBy', newer,
      'command', event_type, 'by', by,
      'reason', 'tenant deployed by newer task ' .. newer .. ' since: left alone', 'ts', now})
    return {'SUPERSEDED', newer}
  end
end

if invalidate == '1' then
  release(task_key, lease_key, inflight_key, plan_key, token, task_id)
  redis.call('HINCRBY', task_key, 'gen', 1)
  redis.call('HSET', task_key, 'token', '')
end
local n = tonumber(ARGV[12])
for i = 1, n do
  redis.call('HSET', task_key, ARGV[11 + 2 * i], ARGV[12 + 2 * i])
end
if control == 'CLEAR' then
  redis.call('HDEL', task_key, 'control', 'controlBy', 'controlReason')
elseif control ~= '' then
  redis.call('HSET', task_key, 'control', control, 'controlBy', by, 'controlReason', reason)
  -- A parked HealthCheck (deployer/parking.py) is sent now, so its gate sees the flag at once.
  local due = redis.call('ZSCORE', K_PARKED, task_id)
  if due and tonumber(due) > now then redis.call('ZADD', K_PARKED, now, task_id) end
end
if queue_op == 'FRONT' or queue_op == 'REMOVE' then redis.call('LREM', queue_key, 0, task_id) end
if queue_op == 'FRONT' or queue_op == 'PUSH_FRONT' then redis.call('LPUSH', queue_key, task_id) end
if queue_op == 'PUSH_BACK' then redis.call('RPUSH', queue_key, task_id) end
if new_status ~= '' then
  change_status(task_key, plan_key, new_status, now)
  if new_status == 'CANCELLED' then redis.call('HSET', task_key, 'endedAt', now, 'cancelledBy', by) end
  if new_status == 'PENDING' then redis.call('HDEL', task_key, 'endedAt', 'supersededBy') end
end
emit(events_key, maxlen, {'type', event_type, 'planId', plan_id, 'taskId', task_id,
  'tenantId', tenant_id, 'from', status, 'to', new_status ~= '' and new_status or status,
  'by', by, 'reason', reason, 'ts', now})
return {'OK', status}
