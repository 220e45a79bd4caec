-- The reconciler's claim: tasks whose lease deadline passed and whose run no longer holds
-- the tenant lease get a new token (the old run is fenced off) and are handed back to the
-- caller to re-send from their checkpoint; past the redelivery cap they fail instead.
-- Atomic, so any number of workers may run it at once: a task is claimed by exactly one.
-- KEYS: inflight, events
-- ARGV: now_ms, lease_ttl_ms, max_redeliveries, task_key_prefix, lease_key_prefix,
--       plan_key_prefix, max_batch, events_maxlen, pending_grace_ms,
--       failure_code (of a task failed past the cap: a deployer.errors.Code)
-- Returns a flat list of records:
--   'R', task_id, plan_id, token, run_id, run_json, ctx_json, config_json
--        re-drive this task; run_json and ctx_json are '' when its run was never stored
--        (the dispatcher died between the fill and storing the run built from config_json)
--   'F', task_id, plan_id, '', '', '', '', ''          failed (cap reached); refill the plan
local inflight_key, events_key = KEYS[1], KEYS[2]
local now, ttl, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local task_prefix, lease_prefix, plan_prefix = ARGV[4], ARGV[5], ARGV[6]
local max_batch, maxlen, grace = tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
local failure_code = ARGV[10] or ''

-- A sent task that has not started yet waits `grace`, doubled with every re-drive it had:
-- each re-drive adds a message to the queue it is waiting in, so re-driving a backlogged
-- task at a fixed period only lengthens the backlog (seen: 300 tasks re-driven every 4 s
-- behind a 30 s queue, every message stale on arrival, until the cap failed them all).
local function pending_grace(task_key)
  local n = tonumber(redis.call('HGET', task_key, 'redeliveries') or '0')
  return grace * 2 ^ math.min(n, 3)
end

local out = {}
local due = redis.call('ZRANGEBYSCORE', inflight_key, '-inf', now, 'LIMIT', 0, max_batch)
for _, task_id in ipairs(due) do
  local task_key = task_prefix .. task_id
  local t = redis.call('HMGET', task_key, 'status', 'token', 'runId', 'tenantId', 'planId',
    'run', 'ctx', 'stageName', 'runKind', 'config')
  local status, token, run_id, tenant_id, plan_id = t[1], t[2], t[3], t[4], t[5]
  local live = status == 'PENDING' or status == 'RUNNING' or status == 'ROLLING_BACK'
  if not live or not token or not tenant_id then
    -- Finished, paused or gone: nothing to watch (release() normally did this already).
    redis.call('ZREM', inflight_key, task_id)
  else
    local lease_key = lease_prefix .. tenant_id
    local plan_key = plan_prefix .. plan_id
    local holder = redis.call('GET', lease_key)
    if holder == token then
      -- Still owned: the deadline in the watch list is behind the lease; catch up.
      local left = redis.call('PTTL', lease_key)
      if left < 0 then left = ttl end
      redis.call('ZADD', inflight_key, now + left, task_id)
    elseif status == 'PENDING'
        and tonumber(redis.call('HGET', task_key, 'dispatchedAt') or '0')
            + pending_grace(task_key) > now then
      -- Sent but not started: its first stage may just be waiting its turn behind a long
      -- queue (first stages have the lowest priority). Re-driving it now would only add a
      -- duplicate to that queue, so it gets the grace period first.
      redis.call('ZADD', inflight_key,
        tonumber(redis.call('HGET', task_key, 'dispatchedAt')) + pending_grace(task_key), task_id)
    else
      local n = redis.call('HINCRBY', task_key, 'redeliveries', 1)
      local stage = t[8] or ''
      if n > cap then
        local reason = 'lease expired ' .. n .. ' times while ' .. status ..
          ' (workers lost or stalled); redelivery cap ' .. cap .. ' reached, giving up'
        give_up(out, {task_key, plan_key, lease_key, inflight_key, events_key},
          {task_id = task_id, plan_id = plan_id, tenant_id = tenant_id, status = status,
           run_kind = t[9], run_id = run_id, stage = stage}, reason, failure_code, token, now,
          maxlen)
      else
        local gen = redis.call('HINCRBY', task_key, 'gen', 1)
        local new_token = run_id .. '.' .. gen
        redis.call('HSET', task_key, 'token', new_token, 'updatedAt', now, 'dispatchedAt', now)
        local watch = ttl
        if status == 'PENDING' then watch = math.max(ttl, pending_grace(task_key)) end
        redis.call('ZADD', inflight_key, now + watch, task_id)
        emit(events_key, maxlen, {'type', 'TASK_REDRIVEN', 'planId', plan_id, 'taskId', task_id,
          'tenantId', tenant_id, 'stage', stage, 'from', token, 'to', new_token,
          'redeliveries', n, 'by', 'reconciler', 'ts', now})
        redrive_record(out, task_id, plan_id, new_token, run_id, t)
      end
    end
  end
end
return out
