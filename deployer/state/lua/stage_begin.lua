-- Start (or re-enter, after a poll) a stage: fence, the previous stage's end, control flags,
-- lease, status, event.
-- KEYS: task, plan, lease, inflight, events, lease epoch (counts acquisitions of the tenant),
--       applied (rank of the last task that took the tenant: "createdAtMs|taskId")
-- ARGV: token, stage_index, stage_name, now_ms, hold_ms (the lease TTL plus the fold window:
--       how long the lease and the in-flight deadline are set for), attempt, step_index,
--       running_status, max_redeliveries, events_maxlen, ctx_json, worker, progress,
--       plan_id, tenant_id (as the message says: checked against the stored task),
--       lease_epoch (the message context's: '0' when it never took the lease),
--       previous_ended_ms (when the previous stage left its end to this begin: the time it
--       really ended, so its duration and STAGE_COMPLETED leave out the queue wait; '' else)
local task_key, plan_key, lease_key, inflight_key, events_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, stage_index, stage_name, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local ttl, attempt, step_index, running = tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local max_redeliveries, maxlen, ctx_json = tonumber(ARGV[9]), ARGV[10], ARGV[11]
local worker, progress, lease_epoch = ARGV[12], ARGV[13], ARGV[16] or '0'

local t = redis.call('HMGET', task_key, 'token', 'status', 'control', 'taskId', 'tenantId', 'planId',
  'cursor', 'createdAt', 'runKind', 'force', 'checkpoint', 'stageStartedAt', 'stageName')
local cur_token, status, control, task_id, tenant_id, plan_id, cursor = t[1], t[2], t[3], t[4], t[5], t[6], t[7]
-- The keys above were built from the message's ids: nothing is touched unless they are the task's.
if forged(t[4], t[6], t[5], ARGV[14], ARGV[15]) then return {'FORGED', (t[6] or '') .. '/' .. (t[5] or '')} end
if cur_token ~= token then return {'STALE', status or ''} end
if status ~= 'PENDING' and status ~= 'RUNNING' and status ~= 'ROLLING_BACK' then return {'STALE', status} end

-- The previous stage's end, folded into this begin (docs/reliability.md, "A stage's end"):
-- a stage that finished within the fold window sent its context on without a round trip of
-- its own, and the first message of the next stage records that stage's checkpoint, context,
-- duration and STAGE_COMPLETED here, before the control, lease and redelivery checks below,
-- exactly as stage_end.lua would have. Only when this run's last start (cursor) lies in the
-- previous stage and that stage's end is not recorded yet (a stage that ran longer ended on
-- its own; a redelivered message finds the cursor in this stage): so once.
if attempt == '0' and step_index == '0' and stage_index ~= '0' and status ~= 'PENDING' then
  local prev = tostring(tonumber(stage_index) - 1)
  local in_prev = token .. ':' .. prev .. ':'
  local unended = cursor and string.sub(cursor, 1, #in_prev) == in_prev
    and string.match(string.sub(cursor, #in_prev + 1), '^%d+:%d+$')
  if unended and t[11] == prev then
    -- that stage's own end (stage_end.lua) checkpointed it under this run's token
    unended = not string.find(redis.call('HGET', task_key, 'ctx') or '',
      '"token":"' .. token .. '"', 1, true)
  end
  if unended then
    -- As stage_end.lua: a lease another run took (or held meanwhile: the tenant's epoch
    -- moved) means that stage's work may be overwritten: nothing recorded, the task stays
    -- in the reconciler's watch list and runs again from its checkpoint. Free and nobody
    -- ran in between: take it back.
    local holder = redis.call('GET', lease_key)
    if not holder then
      if lease_epoch ~= '0' and (redis.call('GET', KEYS[6]) or '0') ~= lease_epoch then
        return {'STALE', 'lease lost'}
      end
      redis.call('SET', lease_key, token, 'PX', ttl)
    elseif holder ~= token then
      return {'STALE', 'lease lost'}
    end
    redis.call('HSET', task_key, 'checkpoint', prev, 'ctx', ctx_json)
    -- the end the message carries, within [that stage's start, now] (another worker's clock)
    local ended = now
    local said = tonumber(ARGV[17] or '')
    if said and said <= now and said >= (tonumber(t[12]) or now) then ended = math.floor(said) end
    if t[12] then stage_timed(t[13] or '', t[12], ended) end
    emit(events_key, maxlen, {'type', 'STAGE_COMPLETED', 'planId', plan_id, 'taskId', task_id,
      'tenantId', tenant_id, 'stage', t[13] or '', 'stageIndex', prev, 'ts', ended})
  end
end

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
-- the stage's first entry also stamps its start, in the same HSET
local fields = {'cursor', here, 'stageIndex', stage_index, 'stageName', stage_name,
  'updatedAt', now, 'worker', worker, 'progress', progress}
local entered = attempt == '0' and step_index == '0'
if entered then
  fields[#fields + 1] = 'stageStartedAt'
  fields[#fields + 1] = now
end
redis.call('HSET', task_key, unpack(fields))
if entered then
  emit(events_key, maxlen, {'type', 'STAGE_STARTED', 'planId', plan_id, 'taskId', task_id,
    'tenantId', tenant_id, 'stage', stage_name, 'stageIndex', stage_index, 'worker', worker, 'ts', now})
end
return {'OK', status, acquired, epoch}
