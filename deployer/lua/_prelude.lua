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

-- Progressive rollout (issue 17; deployer/waves.py): a task of a plan with a strategy
-- moves its wave's counters too; a failure beyond the failure budget pauses the plan (and,
-- for onExceed rollback, marks the rollback due); a wave left with no live task wakes the
-- plan's wave step (zset deployer:plan-timers, run by deployer/lua/wave_step.lua).
local function wave_moved(task_key, plan_key, old, new_status, now)
  local w = redis.call('HGET', task_key, 'wave')
  if not w then return end
  local c = 'w:' .. w .. ':c:'
  if old then redis.call('HINCRBY', plan_key, c .. old, -1) end
  redis.call('HINCRBY', plan_key, c .. new_status, 1)
  local p = redis.call('HMGET', plan_key, 'wave', 'waveState', 'planId', 'budgetMax',
    'budgetScope', 'budgetOnExceed', 'control', 'pendingRollback', 'eventsMaxlen',
    'w:' .. w .. ':budget')
  local plan_id = p[3]
  if new_status == 'FAILED' and p[4] and p[7] ~= 'CANCEL' and p[8] ~= '1' then
    local used, limit
    if p[5] == 'wave' then
      used = tonumber(redis.call('HGET', plan_key, c .. 'FAILED') or '0')
      limit = tonumber(p[10] or '0')
    else
      used = tonumber(redis.call('HGET', plan_key, 'c:FAILED') or '0')
      limit = tonumber(p[4])
    end
    if used > limit and (p[7] ~= 'PAUSE' or p[6] == 'rollback') then
      local why = 'failure budget exceeded: ' .. used .. ' failed, at most ' .. limit ..
        ' allowed (' .. p[5] .. ' scope, wave ' .. w .. ')'
      redis.call('HSET', plan_key, 'control', 'PAUSE', 'controlBy', 'failure-budget',
        'controlReason', why, 'stopReason', why)
      emit('deployer:events', p[9], {'type', 'BUDGET_EXCEEDED', 'planId', plan_id, 'wave', w,
        'failed', used, 'max', limit, 'scope', p[5], 'onExceed', p[6], 'ts', now})
      if p[6] == 'rollback' then
        redis.call('HSET', plan_key, 'pendingRollback', '1', 'waveState', 'HALTED')
        redis.call('ZADD', 'deployer:plan-timers', now, plan_id)
        emit('deployer:events', p[9], {'type', 'PLAN_AUTO_ROLLBACK', 'planId', plan_id,
          'wave', w, 'by', 'failure-budget', 'reason', why, 'ts', now})
      else
        emit('deployer:events', p[9], {'type', 'PLAN_AUTO_PAUSED', 'planId', plan_id,
          'wave', w, 'by', 'failure-budget', 'reason', why, 'ts', now})
      end
    end
  end
  if w == p[1] and p[2] == 'RUNNING' then
    local live = 0
    for _, s in ipairs({'PENDING', 'RUNNING', 'ROLLING_BACK', 'PAUSED'}) do
      live = live + tonumber(redis.call('HGET', plan_key, c .. s) or '0')
    end
    if live == 0 then redis.call('ZADD', 'deployer:plan-timers', now, plan_id) end
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
