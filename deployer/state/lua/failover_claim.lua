-- After a Redis failover (deployer/failover.py): every live task the caller saw is re-driven
-- from the checkpoint this master holds. The old master may have acknowledged writes it
-- never replicated (a stage's end, a completion, a lease): the world (the target hash, the
-- broker's messages) can be ahead of what is stored here, so each run is restarted from its
-- stored checkpoint under a new token that fences off whatever ran meanwhile. Its
-- generation skips `gen_step` tokens, so no token handed out in the lost writes is issued
-- again. Not a redelivery: the task did nothing wrong, the cap is not counted.
-- KEYS: inflight, events
-- ARGV: now_ms, lease_ttl_ms, task_key_prefix, lease_key_prefix, events_maxlen, gen_step,
--       reason, then per candidate: task_id, token
-- Returns records as reconcile_claim.lua does ('R' only).
local inflight_key, events_key = KEYS[1], KEYS[2]
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local task_prefix, lease_prefix, maxlen = ARGV[3], ARGV[4], ARGV[5]
local gen_step, reason = tonumber(ARGV[6]), ARGV[7]

local out = {}
for i = 8, #ARGV, 2 do
  local task_id, seen_token = ARGV[i], ARGV[i + 1]
  local task_key = task_prefix .. task_id
  local t = redis.call('HMGET', task_key, 'status', 'token', 'runId', 'tenantId', 'planId',
    'run', 'ctx', 'stageName', 'runKind', 'config')
  local status, token, run_id, tenant_id, plan_id = t[1], t[2], t[3], t[4], t[5]
  local live = status == 'PENDING' or status == 'RUNNING' or status == 'ROLLING_BACK'
  if live and token and token == seen_token and tenant_id and run_id then
    local lease_key = lease_prefix .. tenant_id
    if redis.call('GET', lease_key) == token then redis.call('DEL', lease_key) end
    local gen = redis.call('HINCRBY', task_key, 'gen', gen_step)
    local new_token = run_id .. '.' .. gen
    redis.call('HSET', task_key, 'token', new_token, 'updatedAt', now, 'dispatchedAt', now,
      'worker', '')
    redis.call('ZADD', inflight_key, now + ttl, task_id)
    emit(events_key, maxlen, {'type', 'TASK_REDRIVEN', 'planId', plan_id, 'taskId', task_id,
      'tenantId', tenant_id, 'stage', t[8] or '', 'from', token, 'to', new_token,
      'reason', reason, 'by', 'reconciler', 'ts', now})
    redrive_record(out, task_id, plan_id, new_token, run_id, t)
  end
end
return out
