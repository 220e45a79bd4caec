-- Shared helpers, prepended to every script (Redis scripts cannot import).
-- The plan status an operator reads from its tasks' counters: the table in
-- deployer/lifecycle.py (derive_plan_status is its Python mirror, tested against this).
local function derive_plan(plan_key)
  local c = redis.call('HMGET', plan_key, 'c:RUNNING', 'c:ROLLING_BACK', 'c:PENDING', 'c:PAUSED',
    'c:FAILED', 'c:ROLLBACK_FAILED', 'c:CANCELLED', 'c:ROLLED_BACK', 'c:COMPLETED', 'c:SUPERSEDED',
    'control')
  local function n(i) return tonumber(c[i] or '0') or 0 end
  local control = c[11]
  local status
  if n(1) + n(2) > 0 then
    status = 'RUNNING'
  elseif n(3) > 0 then
    if control == 'PAUSE' then status = 'PAUSED' else status = 'RUNNING' end
  elseif n(4) > 0 then
    status = 'PAUSED'
  elseif n(5) + n(6) > 0 then
    status = 'FAILED'
  elseif control == 'CANCEL' or (n(7) > 0 and n(8) + n(9) + n(10) == 0) then
    status = 'CANCELLED'
  elseif n(8) > 0 and n(9) == 0 then
    status = 'ROLLED_BACK'
  else
    status = 'COMPLETED'
  end
  redis.call('HSET', plan_key, 'status', status)
  return status
end

-- Per-plan and per-tenant history (deployer/audit.py): every event is also appended, under
-- the same entry id, to {events_key}:plan:{planId} and {events_key}:tenant:{tenantId}.
-- Those are trimmed by age (entries older than the retention go at the next append, an
-- idle stream expires whole) with a count bound for safety. deployer.audit.configure_prelude
-- writes the settings into the two lines below when a script is loaded.
local EVENTS_RETENTION_MS = 604800000
local EVENTS_INDEX_MAXLEN = 1000000

local function index_event(key, id, cutoff, fields)
  local ok = redis.pcall('XADD', key, 'MINID', cutoff, id, unpack(fields))
  -- an index ahead of the global stream (it was deleted and the clock went back): keep the
  -- event under a fresh id rather than fail the script after its state writes
  if type(ok) == 'table' and ok.err then redis.call('XADD', key, '*', unpack(fields)) end
  redis.call('PEXPIRE', key, EVENTS_RETENTION_MS)
  if redis.call('XLEN', key) > EVENTS_INDEX_MAXLEN then
    redis.call('XTRIM', key, 'MAXLEN', '~', EVENTS_INDEX_MAXLEN)
  end
end

local function emit(events_key, maxlen, fields)
  local id = redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  local plan_id, tenant_id
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'planId' then plan_id = fields[i + 1]
    elseif fields[i] == 'tenantId' then tenant_id = fields[i + 1] end
  end
  local cutoff = tonumber(string.match(id, '^%d+')) - EVENTS_RETENTION_MS
  if cutoff < 0 then cutoff = 0 end
  if plan_id and plan_id ~= '' then index_event(events_key .. ':plan:' .. plan_id, id, cutoff, fields) end
  if tenant_id and tenant_id ~= '' then
    index_event(events_key .. ':tenant:' .. tenant_id, id, cutoff, fields)
  end
  return id
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
