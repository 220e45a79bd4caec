-- Start (or re-enter, after a poll) a stage: fence, control flags, lease, status, event.
-- KEYS: task, plan, lease, inflight, events, lease epoch (counts acquisitions of the tenant),
--       applied (rank of the last task that took the tenant: "createdAtMs|taskId")
-- ARGV: token, stage_index, stage_name, now_ms, lease_ttl_ms, attempt, step_index,
--       running_status, max_redeliveries, events_maxlen, ctx_json, worker, progress,
--       plan_id, tenant_id (as the message says: checked against the stored task)
local task_key, plan_key, lease_key, inflight_key, events_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, stage_index, stage_name, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local ttl, attempt, step_index, running = tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local max_redeliveries, maxlen, ctx_json = tonumber(ARGV[9]), ARGV[10], ARGV[11]
local worker, progress = ARGV[12], ARGV[13]

local t = redis.call('HMGET', task_key, 'token', 'status', 'control', 'taskId', 'tenantId', 'planId',
  'cursor', 'createdAt', 'runKind', 'force')
local cur_token, status, control, task_id, tenant_id, plan_id, cursor = t[1], t[2], t[3], t[4], t[5], t[6], t[7]
-- The keys above were built from the message's ids: nothing is touched unless they are the task's.
if forged(t[4], t[6], t[5], ARGV[14], ARGV[15]) then return {'FORGED', (t[6] or '') .. '/' .. (t[5] or '')} end
if cur_token ~= token then return {'STALE', status or ''} end
if status ~= 'PENDING' and status ~= 'RUNNING' and status ~= 'ROLLING_BACK' then return {'STALE', status} end

local pc = redis.call('HMGET', plan_key, 'control', 'waveState')
local plan_control = pc[1]
-- A plan whose waves were halted (rolled back, or its budget's rollback decided) starts no
-- tenant that never started: its old config is still live, and it is cancelled instead.
local halted = pc[2] == 'HALTED' and status == 'PENDING' and t[9] ~= 'ROLLBACK'
  and not redis.call('HGET', task_key, 'startedAt')
if halted or control == 'CANCEL' or plan_control == 'CANCEL' or control == 'PAUSE' or plan_control == 'PAUSE' then
  local new_status = 'PAUSED'
  if halted or control == 'CANCEL' or plan_control == 'CANCEL' then new_status = 'CANCELLED' end
  local by = redis.call('HGET', task_key, 'controlBy') or redis.call('HGET', plan_key, 'controlBy') or ''
  local reason = redis.call('HGET', task_key, 'controlReason') or redis.call('HGET', plan_key, 'controlReason') or ''
  if halted then by, reason = 'rollout', 'plan halted before this tenant started' end
  local old = change_status(task_key, plan_key, new_status, now)
  redis.call('HDEL', task_key, 'control', 'controlBy', 'controlReason')
  if new_status == 'PAUSED' then redis.call('HSET', task_key, 'ctx', ctx_json) end
  if new_status == 'CANCELLED' then redis.call('HSET', task_key, 'endedAt', now, 'cancelledBy', by) end
  release(task_key, lease_key, inflight_key, plan_key, token, task_id)
  emit(events_key, maxlen, {'type', 'TASK_' .. new_status, 'planId', plan_id, 'taskId', task_id,
    'tenantId', tenant_id, 'stage', stage_name, 'from', old, 'to', new_status, 'by', by,
    'reason', reason, 'ts', now})
  return {new_status, old}
end

local holder = redis.call('GET', lease_key)
local acquired, epoch = '0', '0'
if not holder then
  -- Taking the tenant (again): no run applies its config over a newer task's, a rollback's
  -- older config neither (a resumed old plan once regressed the version; a failure budget's
  -- rollback once wrote over a newer plan). An operator's --force is recorded on the task.
  local rank = (t[8] or '0') .. '|' .. task_id
  if t[10] ~= '1' then
    local newer = newer_task(redis.call('GET', KEYS[7]), t[8] or '0', task_id)
    if newer then
      local old = change_status(task_key, plan_key, 'SUPERSEDED', now)
      redis.call('HSET', task_key, 'supersededBy', newer, 'endedAt', now, 'progress', '')
      release(task_key, lease_key, inflight_key, plan_key, token, task_id)
      emit(events_key, maxlen, {'type', 'TASK_SUPERSEDED', 'planId', plan_id, 'taskId', task_id,
        'tenantId', tenant_id, 'stage', stage_name, 'from', old, 'to', 'SUPERSEDED',
        'supersededBy', newer, 'reason', 'tenant deployed by newer task ' .. newer .. ' since: left alone', 'ts', now})
      return {'SUPERSEDED', newer}
    end
  end
  redis.call('SET', KEYS[7], rank)
  redis.call('SET', lease_key, token, 'PX', ttl)
  acquired = '1'
  epoch = tostring(redis.call('INCR', KEYS[6]))
elseif holder == token then
  redis.call('PEXPIRE', lease_key, ttl)
else
  redis.call('ZADD', inflight_key, now + ttl, task_id)
  redis.call('HSET', task_key, 'progress', 'waiting for the tenant lease', 'updatedAt', now)
  redis.call('HINCRBY', plan_key, 'm:leaseConflicts', 1)
  return {'BUSY', holder}
end
redis.call('ZADD', inflight_key, now + ttl, task_id)

local here = token .. ':' .. stage_index .. ':' .. step_index .. ':' .. attempt
if cursor == here then
  local n = redis.call('HINCRBY', task_key, 'redeliveries', 1)
  if n > max_redeliveries then return {'REDELIVERED', tostring(n)} end
end

if status == 'PENDING' then
  change_status(task_key, plan_key, running, now)
  if not redis.call('HGET', task_key, 'startedAt') then redis.call('HSET', task_key, 'startedAt', now) end
  redis.call('HDEL', task_key, 'endedAt', 'lastError', 'failureCode')
  emit(events_key, maxlen, {'type', 'TASK_' .. running, 'planId', plan_id, 'taskId', task_id,
    'tenantId', tenant_id, 'stage', stage_name, 'from', 'PENDING', 'to', running, 'ts', now})
end
if attempt ~= '0' then redis.call('HINCRBY', plan_key, 'm:healthCheckAttempts', 1) end
redis.call('HSET', task_key, 'cursor', here, 'stageIndex', stage_index, 'stageName', stage_name,
  'updatedAt', now, 'worker', worker, 'progress', progress)
if attempt == '0' and step_index == '0' then
  redis.call('HSET', task_key, 'stageStartedAt', now)
  emit(events_key, maxlen, {'type', 'STAGE_STARTED', 'planId', plan_id, 'taskId', task_id,
    'tenantId', tenant_id, 'stage', stage_name, 'stageIndex', stage_index, 'worker', worker, 'ts', now})
end
return {'OK', status, acquired, epoch}
