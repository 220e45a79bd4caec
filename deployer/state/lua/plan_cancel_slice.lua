-- Cancel one slice of a plan's tasks (positions start..stop of its tenants list) in one
-- round trip: a 100,000-task plan is 200 of these, not 100,000 compare-and-set scripts.
-- The plan's CANCEL flag is already set (no slot is filled, a running stage cancels at its
-- next start or poll); this decides every task of the slice as lifecycle._cancel does
-- (tests/integration/test_command_parity.py checks the two agree):
--   RUNNING, ROLLING_BACK           -> cancel requested (task flag), unless already
--   PENDING, PAUSED, FAILED, ROLLBACK_FAILED -> CANCELLED now (new token, lease and slot freed)
--   CANCELLED                       -> already; anything else is refused (finished)
-- Counters (the plan's, and its waves' as the prelude's wave_moved keeps them) move once per
-- slice and the plan is re-derived once; a task whose cancel is requested has its parked
-- HealthCheck sent now (as task_command.lua does), so its gate sees the flag at once. Queue
-- entries of tasks cancelled here stay until the last slice unlinks the queue (a fill skips
-- non-PENDING ids).
-- KEYS: plan, tenants list, queue, inflight, events
-- ARGV: start, stop, now_ms, by, reason, events_maxlen, task_key_prefix, lease_key_prefix,
--       last ('1': delete the queue), max_refused_listed
-- Returns {plan status, now, request, already, refused, then tenant, code, status of the
-- first max_refused_listed refused}.
local plan_key, tenants_key, queue_key, inflight_key, events_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, by, reason, maxlen = tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local task_prefix, lease_prefix, max_listed = ARGV[7], ARGV[8], tonumber(ARGV[10])
local NOW = {PENDING = true, PAUSED = true, FAILED = true, ROLLBACK_FAILED = true}

local now_n, request_n, already_n, refused_n = 0, 0, 0, 0
local moved = {}
local moved_in_wave = {}  -- 'wave|status' -> how many
local refused = {}
for _, task_id in ipairs(redis.call('LRANGE', tenants_key, ARGV[1], ARGV[2])) do
  local task_key = task_prefix .. task_id
  local t = redis.call('HMGET', task_key, 'status', 'token', 'tenantId', 'planId', 'control',
    'wave')
  local status, token, tenant_id, plan_id, control = t[1], t[2] or '', t[3], t[4], t[5]
  if not status then
    -- a task id without a task: nothing to cancel
  elseif status == 'RUNNING' or status == 'ROLLING_BACK' then
    if control == 'CANCEL' then
      already_n = already_n + 1
    else
      redis.call('HSET', task_key, 'control', 'CANCEL', 'controlBy', by, 'controlReason', reason)
      local due = redis.call('ZSCORE', K_PARKED, task_id)
      if due and tonumber(due) > now then redis.call('ZADD', K_PARKED, now, task_id) end
      emit(events_key, maxlen, {'type', 'TASK_CANCEL_REQUESTED', 'planId', plan_id, 'taskId', task_id,
        'tenantId', tenant_id, 'from', status, 'to', status, 'by', by, 'reason', reason, 'ts', now})
      request_n = request_n + 1
    end
  elseif NOW[status] then
    release(task_key, lease_prefix .. tenant_id, inflight_key, plan_key, token, task_id)
    redis.call('HINCRBY', task_key, 'gen', 1)
    redis.call('HSET', task_key, 'token', '', 'status', 'CANCELLED', 'updatedAt', now,
      'endedAt', now, 'cancelledBy', by)
    redis.call('HDEL', task_key, 'control', 'controlBy', 'controlReason')
    moved[status] = (moved[status] or 0) + 1
    if t[6] then
      local w = t[6] .. '|' .. status
      moved_in_wave[w] = (moved_in_wave[w] or 0) + 1
    end
    emit(events_key, maxlen, {'type', 'TASK_CANCELLED', 'planId', plan_id, 'taskId', task_id,
      'tenantId', tenant_id, 'from', status, 'to', 'CANCELLED', 'by', by, 'reason', reason, 'ts', now})
    now_n = now_n + 1
  elseif status == 'CANCELLED' then
    already_n = already_n + 1
  else
    refused_n = refused_n + 1
    if #refused < 3 * max_listed then
      refused[#refused + 1] = tenant_id
      refused[#refused + 1] = 'TASK_ALREADY_FINISHED'
      refused[#refused + 1] = status
    end
  end
end
if now_n > 0 then
  for status, n in pairs(moved) do redis.call('HINCRBY', plan_key, 'c:' .. status, -n) end
  redis.call('HINCRBY', plan_key, 'c:CANCELLED', now_n)
  local current_wave_moved = false
  local p = redis.call('HMGET', plan_key, 'wave', 'waveState', 'planId')
  for ws, n in pairs(moved_in_wave) do
    local w, from = string.match(ws, '^(.*)|(.*)$')
    redis.call('HINCRBY', plan_key, 'w:' .. w .. ':c:' .. from, -n)
    redis.call('HINCRBY', plan_key, 'w:' .. w .. ':c:CANCELLED', n)
    if w == p[1] then current_wave_moved = true end
  end
  if current_wave_moved and p[2] == 'RUNNING' then
    -- the current wave left with no live task: its wave step is due (as wave_moved does)
    local live = 0
    for _, s in ipairs({'PENDING', 'RUNNING', 'ROLLING_BACK', 'PAUSED'}) do
      live = live + tonumber(redis.call('HGET', plan_key, 'w:' .. p[1] .. ':c:' .. s) or '0')
    end
    if live == 0 then redis.call('ZADD', K_PLAN_TIMERS, now, p[3]) end
  end
  redis.call('HSET', plan_key, 'updatedAt', now)
end
if ARGV[9] == '1' then redis.call('UNLINK', queue_key) end
local status = derive_plan(plan_key)
local out = {status, tostring(now_n), tostring(request_n), tostring(already_n), tostring(refused_n)}
for _, v in ipairs(refused) do out[#out + 1] = v end
return out
