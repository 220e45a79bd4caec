-- Shared helpers, prepended to every script (Redis scripts cannot import).
-- The key names the scripts build or use without being given them. deployer/state/keys.py
-- owns them: deployer/state/prelude.py writes this block from it when a script is loaded
-- (and tests/unit/test_lua_keys.py keeps the copy here the same; no other line of any
-- script spells a key name).
-- BEGIN KEYS
local K_EVENTS = 'deployer:events'
local K_STATS = 'deployer:stats'
local K_PLAN_TIMERS = 'deployer:plan-timers'
local K_PARKED = 'deployer:parked'
local K_AWAITING_APPROVAL = 'deployer:awaiting-approval'
local K_NOTIFY_OUTBOX = 'deployer:notify:outbox'
local K_NOTIFY_ACTIVE = 'deployer:notify:active'
local K_PLAN_PREFIX = 'deployer:plan:'
local K_NOTIFY_EVENT_PREFIX = 'deployer:notify:event:'
local K_NOTIFY_DUE_PREFIX = 'deployer:notify:due:'
-- END KEYS
-- A plan's status moved (defined below, after emit): its PLAN_<STATUS> event when it ended.
local plan_status_moved
-- The plan status an operator reads from its tasks' counters: the table in
-- deployer/lifecycle.py (derive_plan_status is its Python mirror, tested against this).
local function derive_plan(plan_key)
  local c = redis.call('HMGET', plan_key, 'c:RUNNING', 'c:ROLLING_BACK', 'c:PENDING', 'c:PAUSED',
    'c:FAILED', 'c:ROLLBACK_FAILED', 'c:CANCELLED', 'c:ROLLED_BACK', 'c:COMPLETED', 'c:SUPERSEDED',
    'control', 'status', 'waveState', 'pendingRollback', 'job')
  local function n(i) return tonumber(c[i] or '0') or 0 end
  local control, wave_state, rolling, job = c[11], c[13], c[14] == '1', c[15]
  -- the failure budget's rollback is decided: the plan is on its way back, not paused
  if rolling and control == 'PAUSE' then control = nil end
  local status
  if rolling or n(1) + n(2) > 0 then
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
  -- Not over while its waves are not (the last bake protects whoever waits on the plan) or
  -- while a plan command is still working through its tasks in slices.
  if status ~= 'RUNNING' and status ~= 'PAUSED' and control ~= 'CANCEL' and (job or (wave_state
      and wave_state ~= 'DONE' and wave_state ~= 'HALTED')) then
    if control == 'PAUSE' then status = 'PAUSED' else status = 'RUNNING' end
  end
  redis.call('HSET', plan_key, 'status', status)
  if c[12] ~= status then plan_status_moved(plan_key, c[12], status) end
  return status
end

-- Per-plan and per-tenant history (deployer/audit.py): every event of a plan is also
-- appended, under the same entry id, to the stream {events_key}:plan:{planId}, and a
-- reference 'entryId planId' to the list {events_key}:tenant:{tenantId} (a list of short
-- references, not a stream: a stream costs ~4.7 KB however few entries it holds, a list of
-- ten references ~350 bytes, and a plan can name 100,000 tenants). Both are trimmed by age
-- (older than the retention: at the next append; an idle one expires whole) and bounded by
-- count for safety. deployer.audit.configure_prelude writes the settings into the two
-- lines below when a script is loaded.
local EVENTS_RETENTION_MS = 604800000
local EVENTS_INDEX_MAXLEN = 1000000

local function index_plan(key, id, ms, cutoff, fields)
  local ok = redis.pcall('XADD', key, 'MINID', cutoff, id, unpack(fields))
  -- an index ahead of the global stream (it was deleted and the clock went back): keep the
  -- event under a fresh id rather than fail the script after its state writes
  if type(ok) == 'table' and ok.err then id = redis.call('XADD', key, '*', unpack(fields)) end
  redis.call('PEXPIRE', key, EVENTS_RETENTION_MS)
  -- the count bound is a safety net, checked at one append in 16 (by time) to save a call
  if ms % 16 == 0 and redis.call('XLEN', key) > EVENTS_INDEX_MAXLEN then
    redis.call('XTRIM', key, 'MAXLEN', '~', EVENTS_INDEX_MAXLEN)
  end
  return id
end

local function index_tenant(key, ref, cutoff)
  local length = redis.call('RPUSH', key, ref)
  redis.call('PEXPIRE', key, EVENTS_RETENTION_MS)
  -- where the tenant's history began, kept for good (one short key per tenant): a list that
  -- expired whole and is created again by a later event then still says that older history
  -- is gone, and since when (a plan's history begins with PLAN_CREATED, so it needs none)
  if length == 1 then redis.call('SET', key .. ':began', ref, 'NX') end
  local popped
  for _ = 1, 16 do  -- a few per append: old references go as new ones come
    local head = redis.call('LINDEX', key, 0)
    if not head or tonumber(string.match(head, '^%d+')) >= cutoff then break end
    popped = redis.call('LPOP', key)
  end
  if length > EVENTS_INDEX_MAXLEN then
    popped = redis.call('LINDEX', key, -EVENTS_INDEX_MAXLEN - 1)
    redis.call('LTRIM', key, -EVENTS_INDEX_MAXLEN, -1)
  end
  -- remember that older history is gone (ids never contain ':', so this key is no tenant's)
  if popped then redis.call('SET', key .. ':trimmed', popped, 'PX', EVENTS_RETENTION_MS) end
end

-- Observability, kept by the script that writes the event (deployer/metrics.py reads the
-- counters with one HGETALL, never the stream; deployer/notify delivers the outbox), so a
-- counter or a notification exists exactly when its event does. `configure_prelude` writes
-- the settings and the notification event names (deployer/notify/events.py) into these lines.
local EVENTS_MAXLEN = 100000
local NOTIFY_EVENTS = {}
local NOTIFY_RETENTION_MS = 86400000
local NOTIFY_OUTBOX_MAX = 10000

local function stat(field, by)
  redis.call('HINCRBY', K_STATS, field, by or 1)
end

-- A notification-worthy event joins the outbox: its fields and the plan's counts and stop
-- reason as they are now (deployer/notify reads them when it delivers, however late).
local function enqueue_notification(id, fields, plan_id)
  local key = K_NOTIFY_EVENT_PREFIX .. id
  redis.call('HSET', key, 'id', id, unpack(fields))
  if plan_id and plan_id ~= '' then
    local p = redis.call('HMGET', K_PLAN_PREFIX .. plan_id, 'status', 'total', 'stopReason',
      'c:PENDING', 'c:RUNNING', 'c:PAUSED', 'c:COMPLETED', 'c:FAILED', 'c:CANCELLED',
      'c:ROLLING_BACK', 'c:ROLLED_BACK', 'c:ROLLBACK_FAILED', 'c:SUPERSEDED', 'wave', 'waves')
    local names = {'plan.status', 'plan.total', 'plan.stopReason', 'plan.c:PENDING',
      'plan.c:RUNNING', 'plan.c:PAUSED', 'plan.c:COMPLETED', 'plan.c:FAILED', 'plan.c:CANCELLED',
      'plan.c:ROLLING_BACK', 'plan.c:ROLLED_BACK', 'plan.c:ROLLBACK_FAILED', 'plan.c:SUPERSEDED',
      'plan.wave', 'plan.waves'}
    for i, name in ipairs(names) do
      if p[i] then redis.call('HSET', key, name, p[i]) end
    end
  end
  redis.call('PEXPIRE', key, NOTIFY_RETENTION_MS)
  redis.call('ZADD', K_NOTIFY_OUTBOX, string.match(id, '^%d+'), id)
  if redis.call('ZCARD', K_NOTIFY_OUTBOX) > NOTIFY_OUTBOX_MAX then
    -- nobody delivers (no worker has DEPLOYER_NOTIFY): the oldest go, counted
    redis.call('ZPOPMIN', K_NOTIFY_OUTBOX)
    stat('nt|-|-|dropped')
  end
end

-- Stage durations, as a histogram the exporter reads (deployer/metrics.py STAGE_BUCKETS is
-- this list in seconds): per stage name, the count of durations in each bucket (not
-- cumulative; 'inf' past the last), their sum in ms and their count.
local STAGE_BUCKETS_MS = {50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000,
  300000, 600000}
local function stage_timed(stage, started, now)
  local ms = now - (tonumber(started) or now)
  if ms < 0 then ms = 0 end
  local le = 'inf'
  for _, b in ipairs(STAGE_BUCKETS_MS) do
    if ms <= b then
      le = tostring(b)
      break
    end
  end
  stat('sd|' .. stage .. '|' .. le)
  stat('sds|' .. stage, ms)
  stat('sdc|' .. stage)
end

local function observe(id, kind, fields, plan_id, reason)
  stat('ev|' .. kind)
  if kind == 'TASK_REDRIVEN' then
    if reason and string.sub(reason, 1, 11) == 'worker lost' then
      stat('rd|worker_lost')
    elseif reason and string.sub(reason, 1, 14) == 'redis failover' then
      stat('rd|failover')
    else
      stat('rd|lease_expired')
    end
  elseif kind == 'WAVE_AWAITING_APPROVAL' and plan_id then
    redis.call('ZADD', K_AWAITING_APPROVAL, string.match(id, '^%d+'), plan_id)
  elseif (kind == 'WAVE_APPROVED' or kind == 'WAVE_HALTED') and plan_id then
    redis.call('ZREM', K_AWAITING_APPROVAL, plan_id)
  end
  -- queued while some worker delivers notifications (its claims keep the key alive): a
  -- Redis whose workers never had receivers keeps no outbox, and enabling them later does
  -- not replay a day of old events
  if NOTIFY_EVENTS[kind] and redis.call('EXISTS', K_NOTIFY_ACTIVE) == 1 then
    enqueue_notification(id, fields, plan_id)
  end
end

local function emit(events_key, maxlen, fields)
  local id = redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  local plan_id, tenant_id, kind, reason
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'planId' then plan_id = fields[i + 1]
    elseif fields[i] == 'tenantId' then tenant_id = fields[i + 1]
    elseif fields[i] == 'type' then kind = fields[i + 1]
    elseif fields[i] == 'reason' then reason = fields[i + 1] end
  end
  if kind then observe(id, kind, fields, plan_id, reason) end
  if not plan_id or plan_id == '' then return id end
  local ms = tonumber(string.match(id, '^%d+'))
  local cutoff = ms - EVENTS_RETENTION_MS
  if cutoff < 0 then cutoff = 0 end
  local plan_entry = index_plan(events_key .. ':plan:' .. plan_id, id, ms, cutoff, fields)
  if tenant_id and tenant_id ~= '' then
    index_tenant(events_key .. ':tenant:' .. tenant_id, plan_entry .. ' ' .. plan_id, cutoff)
  end
  return id
end

-- A plan that reached an end (COMPLETED, FAILED, CANCELLED, ROLLED_BACK) says so once per
-- time it gets there: PLAN_<STATUS> with its counts (a retried plan that ends again says it
-- again). Whatever script moved it: a task's end, a plan cancel, a control flag.
local PLAN_ENDS = {COMPLETED = true, FAILED = true, CANCELLED = true, ROLLED_BACK = true}
plan_status_moved = function(plan_key, before, after)
  if not PLAN_ENDS[after] then return end
  local p = redis.call('HMGET', plan_key, 'planId', 'total', 'c:COMPLETED', 'c:FAILED',
    'c:ROLLBACK_FAILED', 'c:CANCELLED', 'c:ROLLED_BACK', 'c:SUPERSEDED', 'stopReason')
  if not p[1] then return end
  local t = redis.call('TIME')
  local fields = {'type', 'PLAN_' .. after, 'planId', p[1], 'from', before or '', 'to', after,
    'total', p[2] or '0', 'completed', p[3] or '0', 'failed', (tonumber(p[4] or '0') or 0) +
    (tonumber(p[5] or '0') or 0), 'cancelled', p[6] or '0', 'rolledBack', p[7] or '0',
    'superseded', p[8] or '0'}
  if p[9] then
    fields[#fields + 1] = 'reason'
    fields[#fields + 1] = p[9]
  end
  fields[#fields + 1] = 'ts'
  fields[#fields + 1] = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  emit(K_EVENTS, EVENTS_MAXLEN, fields)
end

-- Progressive rollout (deployer/waves.py): a task of a plan with a strategy
-- moves its wave's counters too; a failure beyond the failure budget pauses the plan (and,
-- for onExceed rollback, marks the rollback due); a wave left with no live task wakes the
-- plan's wave step (zset K_PLAN_TIMERS, run by deployer/state/lua/wave_step.lua).
local function wave_moved(task_key, plan_key, old, new_status, now)
  local w = redis.call('HGET', task_key, 'wave')
  if not w then return end
  local c = 'w:' .. w .. ':c:'
  if old then redis.call('HINCRBY', plan_key, c .. old, -1) end
  redis.call('HINCRBY', plan_key, c .. new_status, 1)
  local p = redis.call('HMGET', plan_key, 'wave', 'waveState', 'planId', 'budgetMax',
    'budgetScope', 'budgetOnExceed', 'control', 'pendingRollback', 'eventsMaxlen',
    'w:' .. w .. ':budget', 'budgetForgiven', 'w:' .. w .. ':forgiven')
  local plan_id = p[3]
  if new_status == 'FAILED' and p[4] and p[7] ~= 'CANCEL' and p[8] ~= '1' then
    -- failures forgiven by an operator's budget reset (deployer budget --reset) do not count
    local used, limit
    if p[5] == 'wave' then
      used = tonumber(redis.call('HGET', plan_key, c .. 'FAILED') or '0') - tonumber(p[12] or '0')
      limit = tonumber(p[10] or '0')
    else
      used = tonumber(redis.call('HGET', plan_key, 'c:FAILED') or '0') - tonumber(p[11] or '0')
      limit = tonumber(p[4])
    end
    if used > limit and (p[7] ~= 'PAUSE' or p[6] == 'rollback') then
      local why = 'failure budget exceeded: ' .. used .. ' failed, at most ' .. limit ..
        ' allowed (' .. p[5] .. ' scope, wave ' .. w .. ')'
      redis.call('HSET', plan_key, 'control', 'PAUSE', 'controlBy', 'failure-budget',
        'controlReason', why, 'stopReason', why, 'budgetExceededUsed', used,
        'budgetExceededMax', limit, 'budgetExceededWave', w, 'budgetExceededAt', now)
      emit(K_EVENTS, p[9], {'type', 'BUDGET_EXCEEDED', 'planId', plan_id, 'wave', w,
        'failed', used, 'max', limit, 'scope', p[5], 'onExceed', p[6], 'ts', now})
      if p[6] == 'rollback' then
        redis.call('HSET', plan_key, 'pendingRollback', '1', 'waveState', 'HALTED')
        redis.call('ZADD', K_PLAN_TIMERS, now, plan_id)
        emit(K_EVENTS, p[9], {'type', 'PLAN_AUTO_ROLLBACK', 'planId', plan_id,
          'wave', w, 'by', 'failure-budget', 'reason', why, 'ts', now})
      else
        emit(K_EVENTS, p[9], {'type', 'PLAN_AUTO_PAUSED', 'planId', plan_id,
          'wave', w, 'by', 'failure-budget', 'reason', why, 'ts', now})
      end
    end
  end
  if w == p[1] and p[2] == 'RUNNING' then
    local live = 0
    for _, s in ipairs({'PENDING', 'RUNNING', 'ROLLING_BACK', 'PAUSED'}) do
      live = live + tonumber(redis.call('HGET', plan_key, c .. s) or '0')
    end
    if live == 0 then redis.call('ZADD', K_PLAN_TIMERS, now, plan_id) end
  end
end

-- Move a task to a new status, keep the plan's counters and derived status in step.
local function change_status(task_key, plan_key, new_status, now)
  local old = redis.call('HGET', task_key, 'status')
  if old == new_status then return old end
  redis.call('HSET', task_key, 'status', new_status, 'updatedAt', now)
  if old then redis.call('HINCRBY', plan_key, 'c:' .. old, -1) end
  redis.call('HINCRBY', plan_key, 'c:' .. new_status, 1)
  wave_moved(task_key, plan_key, old, new_status, now)
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

-- Store a submitted task as plan_create.lua and plan_slice.lua both do (config only: its run is
-- built when it is first sent). With a strategy, `wave` is its wave index: the task records it
-- and joins its wave's list. Returns whether the task enters the plan's queue now: always
-- without waves, else only in wave 0 while wave 0 runs.
local function store_new_task(task_prefix, task_id, plan_id, tenant_id, config, run_id,
                              total_stages, now, wave, wave_prefix, queue_wave0)
  local fields = {'taskId', task_id, 'planId', plan_id, 'tenantId', tenant_id,
    'status', 'PENDING', 'config', config, 'runId', run_id, 'runKind', 'FORWARD',
    'checkpoint', -1, 'totalStages', total_stages, 'retryCount', 0,
    'createdAt', now, 'updatedAt', now}
  if wave == nil then
    redis.call('HSET', task_prefix .. task_id, unpack(fields))
    return true
  end
  fields[#fields + 1] = 'wave'
  fields[#fields + 1] = wave
  redis.call('HSET', task_prefix .. task_id, unpack(fields))
  redis.call('RPUSH', wave_prefix .. wave, task_id)
  return wave == 0 and queue_wave0
end

-- Append a claim script's 'R' record (reconcile_claim.lua, orphan_claim.lua): re-send this
-- task from its checkpoint. `t` is its HMGET of status, token, runId, tenantId, planId, run,
-- ctx, stageName, runKind, config; a run never stored is built from its config (sent then).
local function redrive_record(out, task_id, plan_id, new_token, run_id, t)
  local stored = t[6] and t[6] ~= ''
  for _, v in ipairs({'R', task_id, plan_id, new_token, run_id, t[6] or '', t[7] or '',
      stored and '' or (t[10] or '')}) do
    out[#out + 1] = v
  end
end

-- The failed status of a run: a rollback's failure is ROLLBACK_FAILED.
local function failed_status(status, run_kind)
  if status == 'ROLLING_BACK' or run_kind == 'ROLLBACK' then return 'ROLLBACK_FAILED' end
  return 'FAILED'
end

-- End a run as failed (task_fail.lua; the claim scripts past the redelivery cap): status,
-- why (`lastError`, `failureCode`: a deployer.errors.Code, `failedStage`), lease, slot and
-- event together. `k` = {task, plan, lease, inflight, events} keys; `token` is the run's,
-- whose lease is given back; `by` ('' for none) names who failed it in the event.
-- Returns the status the task had.
local function fail_task(k, task_id, plan_id, tenant_id, new_status, stage, reason, code, token,
                         now, maxlen, by)
  local old = change_status(k[1], k[2], new_status, now)
  redis.call('HSET', k[1], 'lastError', reason, 'endedAt', now, 'failedStage', stage,
    'failureCode', code)
  release(k[1], k[3], k[4], k[2], token, task_id)
  local fields = {'type', 'TASK_' .. new_status, 'planId', plan_id, 'taskId', task_id,
    'tenantId', tenant_id, 'stage', stage, 'from', old, 'to', new_status, 'reason', reason}
  if code ~= '' then
    fields[#fields + 1] = 'code'
    fields[#fields + 1] = code
  end
  stat('fail|' .. stage .. '|' .. (code ~= '' and code or 'UNKNOWN'))
  if by ~= '' then
    fields[#fields + 1] = 'by'
    fields[#fields + 1] = by
  end
  fields[#fields + 1] = 'ts'
  fields[#fields + 1] = now
  emit(k[5], maxlen, fields)
  return old
end

-- A claim script gives a run up at the redelivery cap (reconcile_claim.lua, orphan_claim.lua):
-- a new token fences off a straggler of the abandoned run, the task fails (lease held by
-- `token` and slot freed), and an 'F' claim record tells the caller to refill the plan.
local function give_up(out, k, t, reason, code, token, now, maxlen)
  -- t: task_id, plan_id, tenant_id, status, run_kind, run_id, stage
  local gen = redis.call('HINCRBY', k[1], 'gen', 1)
  redis.call('HSET', k[1], 'token', t.run_id .. '.' .. gen)
  fail_task(k, t.task_id, t.plan_id, t.tenant_id, failed_status(t.status, t.run_kind), t.stage,
    reason, code, token, now, maxlen, 'reconciler')
  out[#out + 1] = 'F'
  out[#out + 1] = t.task_id
  out[#out + 1] = t.plan_id
  for _ = 1, 5 do out[#out + 1] = '' end
end
