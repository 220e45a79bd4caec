-- Shared helpers, prepended to every script (Redis scripts cannot import).
local function derive_plan(plan_key)
  local function n(s) return tonumber(redis.call('HGET', plan_key, 'c:' .. s) or '0') or 0 end
  local status
  if n('RUNNING') + n('ROLLING_BACK') > 0 then
    status = 'RUNNING'
  elseif n('PENDING') > 0 then
    if redis.call('HGET', plan_key, 'control') == 'PAUSE' then status = 'PAUSED' else status = 'RUNNING' end
  elseif n('PAUSED') > 0 then
    status = 'PAUSED'
  elseif n('FAILED') + n('ROLLBACK_FAILED') > 0 then
    status = 'FAILED'
  elseif n('CANCELLED') > 0 then
    status = 'CANCELLED'
  elseif n('ROLLED_BACK') > 0 then
    status = 'ROLLED_BACK'
  else
    status = 'COMPLETED'
  end
  redis.call('HSET', plan_key, 'status', status)
  return status
end

local function emit(events_key, maxlen, fields)
  redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', unpack(fields))
end

-- Move a task to a new status, keep the plan's counters and derived status in step.
local function change_status(task_key, plan_key, new_status, now)
  local old = redis.call('HGET', task_key, 'status')
  if old == new_status then return old end
  redis.call('HSET', task_key, 'status', new_status, 'updatedAt', now)
  if old then redis.call('HINCRBY', plan_key, 'c:' .. old, -1) end
  redis.call('HINCRBY', plan_key, 'c:' .. new_status, 1)
  local before = redis.call('HGET', plan_key, 'status')
  local after = derive_plan(plan_key)
  redis.call('HSET', plan_key, 'updatedAt', now)
  return old, before, after
end

-- Give back the tenant lease (if ours), the reconciler watch and the plan slot; idempotent.
local function release(task_key, lease_key, inflight_key, plan_key, token, task_id)
  if token ~= '' and redis.call('GET', lease_key) == token then redis.call('DEL', lease_key) end
  redis.call('ZREM', inflight_key, task_id)
  if redis.call('HGET', task_key, 'slot') == '1' then
    redis.call('HSET', task_key, 'slot', '0')
    redis.call('HINCRBY', plan_key, 'inflight', -1)
  end
end

-- A stage message names its task, plan and tenant; the scripts build keys from those names.
-- True when the stored task says otherwise (or does not exist while ids were given):
-- the message is forged and must touch nothing.
local function forged(task_id, plan_id, tenant_id, msg_plan_id, msg_tenant_id)
  if not task_id then return false end  -- no such task: the token check drops it as STALE
  return plan_id ~= msg_plan_id or tenant_id ~= msg_tenant_id
end

-- The task that last took the tenant (`applied` = "createdAtMs|taskId") if it is newer than
-- this one (created later; same instant: the greater task id), else nil.
local function newer_task(applied, created_at, task_id)
  if not applied then return nil end
  local sep = string.find(applied, '|', 1, true)
  if not sep then return nil end
  local at, other = tonumber(string.sub(applied, 1, sep - 1)) or 0, string.sub(applied, sep + 1)
  local mine = tonumber(created_at) or 0
  if other ~= task_id and (at > mine or (at == mine and other > task_id)) then return other end
  return nil
end
