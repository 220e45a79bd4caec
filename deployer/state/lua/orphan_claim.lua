-- Take over tasks whose worker died (its heartbeat key is gone): a new token fences off the
-- dead run (its late messages are dropped as stale), the tenant lease it held is freed so
-- the re-sent stage takes it again, and the caller re-sends the task from its checkpoint.
-- A task is taken only if its token and worker are still those the caller saw, and the
-- worker's heartbeat is still missing: whatever moved on since is left alone.
-- KEYS: inflight, events
-- ARGV: now_ms, lease_ttl_ms, max_redeliveries, task_key_prefix, lease_key_prefix,
--       plan_key_prefix, worker_key_prefix, events_maxlen,
--       failure_code (of a task failed past the cap: a deployer.errors.Code),
--       then per candidate: task_id, token, worker, node
-- Returns records as reconcile_claim.lua does:
--   'R', task_id, plan_id, token, run_id, run_json, ctx_json, config_json
--   'F', task_id, plan_id, '', '', '', '', ''          failed (cap reached); refill the plan
local inflight_key, events_key = KEYS[1], KEYS[2]
local now, ttl, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local task_prefix, lease_prefix, plan_prefix = ARGV[4], ARGV[5], ARGV[6]
local worker_prefix, maxlen, failure_code = ARGV[7], ARGV[8], ARGV[9]

local out = {}
for i = 10, #ARGV, 4 do
  local task_id, seen_token, seen_worker, node = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local task_key = task_prefix .. task_id
  local t = redis.call('HMGET', task_key, 'status', 'token', 'runId', 'tenantId', 'planId',
    'run', 'ctx', 'stageName', 'runKind', 'config', 'worker')
  local status, token, run_id, tenant_id, plan_id = t[1], t[2], t[3], t[4], t[5]
  -- PENDING tasks are not a worker's yet (a resumed one may name the worker of its last
  -- stage): the pending grace and the lease watch cover them.
  local live = status == 'RUNNING' or status == 'ROLLING_BACK'
  if live and token == seen_token and (t[11] or '') == seen_worker and tenant_id
      and redis.call('EXISTS', worker_prefix .. node) == 0 then
    local lease_key = lease_prefix .. tenant_id
    local plan_key = plan_prefix .. plan_id
    if redis.call('GET', lease_key) == token then redis.call('DEL', lease_key) end
    local n = redis.call('HINCRBY', task_key, 'redeliveries', 1)
    local stage = t[8] or ''
    if n > cap then
      local reason = 'worker ' .. node .. ' lost; redelivery cap ' .. cap .. ' reached, giving up'
      give_up(out, {task_key, plan_key, lease_key, inflight_key, events_key},
        {task_id = task_id, plan_id = plan_id, tenant_id = tenant_id, status = status,
         run_kind = t[9], run_id = run_id, stage = stage}, reason, failure_code, token, now, maxlen)
    else
      local gen = redis.call('HINCRBY', task_key, 'gen', 1)
      local new_token = run_id .. '.' .. gen
      redis.call('HSET', task_key, 'token', new_token, 'updatedAt', now, 'dispatchedAt', now,
        'worker', '')
      redis.call('ZADD', inflight_key, now + ttl, task_id)
      emit(events_key, maxlen, {'type', 'TASK_REDRIVEN', 'planId', plan_id, 'taskId', task_id,
        'tenantId', tenant_id, 'stage', stage, 'from', token, 'to', new_token,
        'redeliveries', n, 'reason', 'worker lost: ' .. node, 'by', 'reconciler', 'ts', now})
      redrive_record(out, task_id, plan_id, new_token, run_id, t)
    end
  end
end
return out
