-- Pause or resume one slice of a plan's tasks in one round trip (deployer/plan_commands.py):
-- a 100,000-task plan is a few hundred of these, not 100,000 compare-and-set scripts. The
-- plan-level part (its flag) is already done; this decides each task of the slice as
-- lifecycle.decide does (tests/integration/test_plan_commands.py checks the two agree):
--   PAUSE   RUNNING, ROLLING_BACK -> pause requested (task flag; a parked poll is sent now),
--                                    already when requested, refused while a cancel is
--           PENDING               -> PAUSED now (new token, lease and slot freed)
--           PAUSED                -> already; anything else is refused (TASK_NOT_RUNNING)
--   RESUME  PAUSED                -> PENDING, queued (PUSH_FRONT or PUSH_BACK: ARGV[10])
--           RUNNING, ROLLING_BACK with a pause requested -> the request withdrawn
--           RUNNING, ROLLING_BACK, PENDING -> already; anything else refused (TASK_NOT_PAUSED)
-- `which` picks the tasks this pass decides: ALL, STARTED (a stage ever started: mid-flight)
-- or UNSTARTED; the others are left to another pass. Queue entries of tasks paused here
-- stay (a fill skips non-PENDING ids); the job's last pause slice unlinks the queue.
-- KEYS: plan, tenants list, queue, inflight, events
-- ARGV: command (PAUSE | RESUME), start, stop, backward ('1': last first), now_ms, by,
--       reason, events_maxlen, task_key_prefix, queue_op, which, lease_key_prefix, force
-- Returns {now, request, withdraw, already, refused, then tenant, code, status of the first
-- 50 refused}.
local plan_key, tenants_key, queue_key, inflight_key, events_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local command, now, by, reason, maxlen = ARGV[1], tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local task_prefix, queue_op, which, lease_prefix, force = ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local ACTIVE = {RUNNING = true, ROLLING_BACK = true}
local n = {now = 0, request = 0, withdraw = 0, already = 0, refused = 0}
local refused = {}

local ids = redis.call('LRANGE', tenants_key, ARGV[2], ARGV[3])
local first, last, step = 1, #ids, 1
if ARGV[4] == '1' then first, last, step = #ids, 1, -1 end

local function refuse(tenant_id, code, status)
  n.refused = n.refused + 1
  if #refused < 150 then
    refused[#refused + 1] = tenant_id
    refused[#refused + 1] = code
    refused[#refused + 1] = status
  end
end
local function event(kind, t, task_id, from, to, why)
  emit(events_key, maxlen, {'type', kind, 'planId', t[4], 'taskId', task_id, 'tenantId', t[3],
    'from', from, 'to', to, 'by', by, 'reason', why, 'ts', now})
end

for i = first, last, step do
  local task_id = ids[i]
  local task_key = task_prefix .. task_id
  local t = redis.call('HMGET', task_key, 'status', 'token', 'tenantId', 'planId', 'control',
    'startedAt', 'checkpoint')
  local status, control = t[1], t[5]
  local started = (t[6] and t[6] ~= '') or tonumber(t[7] or '-1') >= 0
  local mine = which == 'ALL' or (which == 'STARTED') == started
  if not status or not mine then
    -- a task id without a task, or one another pass decides
  elseif command == 'PAUSE' then
    if ACTIVE[status] then
      if control == 'PAUSE' then
        n.already = n.already + 1
      elseif control == 'CANCEL' then
        refuse(t[3], 'TASK_CANCELLING', status)
      else
        redis.call('HSET', task_key, 'control', 'PAUSE', 'controlBy', by, 'controlReason', reason)
        local due = redis.call('ZSCORE', K_PARKED, task_id)
        if due and tonumber(due) > now then redis.call('ZADD', K_PARKED, now, task_id) end
        event('TASK_PAUSE_REQUESTED', t, task_id, status, status, reason)
        n.request = n.request + 1
      end
    elseif status == 'PENDING' then
      release(task_key, lease_prefix .. t[3], inflight_key, plan_key, t[2] or '', task_id)
      redis.call('HINCRBY', task_key, 'gen', 1)
      redis.call('HSET', task_key, 'token', '')
      change_status(task_key, plan_key, 'PAUSED', now)
      event('TASK_PAUSED', t, task_id, status, 'PAUSED', reason)
      n.now = n.now + 1
    elseif status == 'PAUSED' then
      n.already = n.already + 1
    else
      refuse(t[3], 'TASK_NOT_RUNNING', status)
    end
  else -- RESUME
    local why = reason
    if force == '1' then why = 'forced' .. (reason ~= '' and ': ' .. reason or '') end
    if status == 'PAUSED' then
      redis.call('HDEL', task_key, 'control', 'controlBy', 'controlReason', 'endedAt', 'supersededBy')
      redis.call('HSET', task_key, 'force', force)
      if queue_op == 'PUSH_FRONT' then redis.call('LPUSH', queue_key, task_id)
      else redis.call('RPUSH', queue_key, task_id) end
      change_status(task_key, plan_key, 'PENDING', now)
      event('TASK_RESUMED', t, task_id, status, 'PENDING', why)
      n.now = n.now + 1
    elseif ACTIVE[status] and control == 'PAUSE' then
      redis.call('HDEL', task_key, 'control', 'controlBy', 'controlReason')
      redis.call('HSET', task_key, 'force', force)
      event('TASK_RESUMED', t, task_id, status, status, why)
      n.withdraw = n.withdraw + 1
    elseif ACTIVE[status] or status == 'PENDING' then
      n.already = n.already + 1
    else
      refuse(t[3], 'TASK_NOT_PAUSED', status)
    end
  end
end
local out = {tostring(n.now), tostring(n.request), tostring(n.withdraw), tostring(n.already),
  tostring(n.refused)}
for _, v in ipairs(refused) do out[#out + 1] = v end
return out
