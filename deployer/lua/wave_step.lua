-- The wave step of a plan with a strategy (deployer/waves.py): move the plan's
-- current wave on as far as it can go now, atomically, so any number of workers may run
-- it at once (the second finds nothing to do). Nothing waits in a worker: a bake end or a
-- gate re-check is a due time in the plan timers zset, which every worker's reconciler reads.
--   RUNNING -> (wave has no live task) BAKING until now+bake -> next wave:
--   AWAITING_APPROVAL (approval first/every) -> APPROVED -> AWAITING_GATE (gate) -> RUNNING
--   the last wave's end -> DONE; a plan rollback or cancel -> HALTED.
-- KEYS: plan, plan timers, events, plan queue
-- ARGV: plan_id, now_ms, op ('' | APPROVE | GATE_OK | GATE_FAIL | HALT | ROLLBACK_DONE),
--       by, reason, wave_key_prefix, gate_recheck_ms, op_wave, task_key_prefix
-- Returns {outcome, started ('1': a wave was queued: fill it), wave, gate}; outcome is one of
-- NONE (no strategy), REFUSED (approve: nothing awaits approval), ROLLBACK (roll the plan
-- back now: the failure budget), WAIT, PAUSED, RUNNING, BAKING, AWAITING_APPROVAL, GATE
-- (ask the gate webhook, then call again with GATE_OK or GATE_FAIL), DONE, HALTED.
local plan_key, timers_key, events_key, queue_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local plan_id, now, op, by, reason = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local wave_prefix, recheck, op_wave, task_prefix = ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9]

local p = redis.call('HMGET', plan_key, 'waves', 'wave', 'waveState', 'bakeUntil', 'bakeMs',
  'approval', 'gate', 'control', 'pendingRollback', 'eventsMaxlen', 'c:RUNNING')
if not p[1] then
  redis.call('ZREM', timers_key, plan_id)
  return {'NONE', '0', '', ''}
end
local waves, wave, state = tonumber(p[1]), tonumber(p[2]), p[3]
local bake, approval, gate, control, maxlen = tonumber(p[5] or '0'), p[6], p[7] or '', p[8], p[10]
local started = '0'

local function set_state(s)
  state = s
  redis.call('HSET', plan_key, 'waveState', s, 'updatedAt', now)
end
local function out(outcome)
  return {outcome, started, tostring(wave), gate}
end
local function event(kind, extra)
  local fields = {'type', kind, 'planId', plan_id, 'wave', wave}
  for _, v in ipairs(extra or {}) do fields[#fields + 1] = v end
  fields[#fields + 1] = 'ts'
  fields[#fields + 1] = now
  emit(events_key, maxlen, fields)
end

if op == 'APPROVE' then
  -- refused unless the current wave waits for exactly this (not during a rollback, a bake)
  if state ~= 'AWAITING_APPROVAL' or p[9] == '1' then
    return {'REFUSED', '0', tostring(wave), state or ''}
  end
  if op_wave ~= '' and tonumber(op_wave) ~= wave then
    return {'REFUSED', '0', tostring(wave), state}
  end
  redis.call('HSET', plan_key, 'w:' .. wave .. ':approvedBy', by, 'w:' .. wave .. ':approvedAt', now)
  event('WAVE_APPROVED', {'by', by, 'reason', reason})
  set_state('APPROVED')
end

if op == 'HALT' then
  -- A rollback or cancel of the whole plan ends its waves (no later wave starts).
  if state ~= 'DONE' and state ~= 'HALTED' then
    set_state('HALTED')
    redis.call('HSET', plan_key, 'stopReason', reason)
    event('WAVE_HALTED', {'by', by, 'reason', reason})
  end
  if p[9] ~= '1' then redis.call('ZREM', timers_key, plan_id) end
  return out('HALTED')
end
if p[9] == '1' then
  if op == 'ROLLBACK_DONE' then
    redis.call('HDEL', plan_key, 'pendingRollback')
    redis.call('ZREM', timers_key, plan_id)
    return out('HALTED')
  end
  -- Running forward stages pause at their next boundary first (a running task cannot be
  -- rolled back); the step comes back for them shortly. The due time is also the retry if
  -- the worker that takes the rollback dies before it is done.
  if tonumber(p[11] or '0') > 0 then
    redis.call('ZADD', timers_key, now + 500, plan_id)
    return out('WAIT')
  end
  redis.call('ZADD', timers_key, now + 30000, plan_id)
  return out('ROLLBACK')
end


if state == 'DONE' or state == 'HALTED' then
  redis.call('ZREM', timers_key, plan_id)
  return out(state)
end
if control == 'CANCEL' then
  set_state('HALTED')
  redis.call('HSET', plan_key, 'stopReason', 'plan cancelled')
  redis.call('ZREM', timers_key, plan_id)
  return out('HALTED')
end
if control == 'PAUSE' then
  -- Paused: nothing moves on; resume runs this step again (deployer/control.py).
  redis.call('ZREM', timers_key, plan_id)
  return out('PAUSED')
end

local function live(w)
  local c, n = 'w:' .. w .. ':c:', 0
  for _, s in ipairs({'PENDING', 'RUNNING', 'ROLLING_BACK', 'PAUSED'}) do
    n = n + tonumber(redis.call('HGET', plan_key, c .. s) or '0')
  end
  return n
end

for _ = 1, 4 * waves + 8 do
  if state == 'RUNNING' then
    if live(wave) > 0 then
      if started == '1' then
        -- queued: if the caller dies before filling, a reconciler fills a little later
        redis.call('ZADD', timers_key, now + 5000, plan_id)
      else
        redis.call('ZREM', timers_key, plan_id)
      end
      return out('RUNNING')
    end
    redis.call('HSET', plan_key, 'w:' .. wave .. ':endedAt', now)
    if bake > 0 then
      set_state('BAKING')
      redis.call('HSET', plan_key, 'bakeUntil', now + bake)
      redis.call('ZADD', timers_key, now + bake, plan_id)
      event('WAVE_BAKING', {'until', now + bake})
      return out('BAKING')
    end
    state = 'BAKED'
  elseif state == 'BAKING' then
    local until_ms = tonumber(p[4] or '0')
    if now < until_ms then
      redis.call('ZADD', timers_key, until_ms, plan_id)
      return out('BAKING')
    end
    state = 'BAKED'
  elseif state == 'BAKED' then
    redis.call('HDEL', plan_key, 'bakeUntil')
    event('WAVE_DONE')
    if wave + 1 >= waves then
      set_state('DONE')
      redis.call('ZREM', timers_key, plan_id)
      return out('DONE')
    end
    wave = wave + 1
    redis.call('HSET', plan_key, 'wave', wave)
    if approval == 'every' or (approval == 'first' and wave == 1) then
      set_state('AWAITING_APPROVAL')
      redis.call('ZREM', timers_key, plan_id)
      event('WAVE_AWAITING_APPROVAL')
      return out('AWAITING_APPROVAL')
    end
    state = 'APPROVED'
  elseif state == 'APPROVED' then
    if gate ~= '' then
      set_state('AWAITING_GATE')
    else
      state = 'START'
    end
  elseif state == 'AWAITING_GATE' then
    if op == 'GATE_OK' and tonumber(op_wave) == wave then
      event('WAVE_GATE_PASSED', {'gate', gate})
      state = 'START'
    else
      -- Ask now (op ''), or again after the re-check interval (GATE_FAIL). The due time
      -- also keeps a second worker from asking at the same moment.
      redis.call('ZADD', timers_key, now + recheck, plan_id)
      if op == 'GATE_FAIL' then return out('WAIT') end
      return out('GATE')
    end
  elseif state == 'START' then
    local ids = redis.call('LRANGE', wave_prefix .. wave, 0, -1)
    local queued = {}
    for _, task_id in ipairs(ids) do
      if redis.call('HGET', task_prefix .. task_id, 'status') == 'PENDING' then
        queued[#queued + 1] = task_id
        if #queued == 1000 then
          redis.call('RPUSH', queue_key, unpack(queued))
          queued = {}
        end
      end
    end
    if #queued > 0 then redis.call('RPUSH', queue_key, unpack(queued)) end
    redis.call('HSET', plan_key, 'w:' .. wave .. ':startedAt', now)
    set_state('RUNNING')
    started = '1'
    event('WAVE_STARTED', {'tenants', #ids})
  elseif state == 'AWAITING_APPROVAL' then
    redis.call('ZREM', timers_key, plan_id)
    return out('AWAITING_APPROVAL')
  else
    return out('WAIT')
  end
end
return out('WAIT')
