-- The wave step of a plan with a strategy (deployer/rollout.py): move the plan's current
-- wave on as far as it can go now, atomically, so any number of workers may run it at once
-- (the second finds nothing to do). Nothing waits in a worker: a bake end, a window opening
-- or a gate re-check is a due time in the plan timers zset, which every worker's rollout
-- loop reads.
--   RUNNING -> (wave has no live task) BAKING until now+bake -> next wave:
--   AWAITING_APPROVAL (approval first/every) -> APPROVED -> AWAITING_WINDOW (outside the
--   strategy's window) -> AWAITING_GATE (gate) -> RUNNING
--   the last wave's end (its bake included) -> DONE; a plan rollback or cancel -> HALTED.
-- KEYS: plan, plan timers, events, plan queue
-- ARGV: plan_id, now_ms, op, by, reason, wave_key_prefix, gate_recheck_ms, op_wave,
--       task_key_prefix, window ('' none | OPEN | CLOSED:<ms it opens>), a1, a2,
--       gate_hold_ms (how long a gate call may be out before another worker asks)
-- op: '' (move on) | APPROVE (op_wave) | PROMOTE (op_wave or '' = current; a1 all '1',
--     a2 approve '1') | BUDGET (a1 JSON {"plan": n} or {"waves": {"i": n}} or ''; a2 reset
--     '1') | GATE_OK, GATE_FAIL (op_wave; a1 the gate's status, a2 an excerpt of its answer)
--     | HALT | ROLLBACK_DONE
-- Returns {outcome, started ('1': a wave was queued: fill it), wave, detail}; outcome is
-- NONE (no strategy), REFUSED (approve: no wave awaits approval; detail its state),
-- WRONG_WAVE (approve/promote: wave `wave` is the one waiting/current), ALREADY (approve:
-- that wave was approved; detail by whom), APPROVAL_REQUIRED, NOTHING (promote: waves over),
-- ROLLING_BACK (the budget's rollback is under way), NO_BUDGET, BUDGET (detail: the new
-- max), STALE (a gate answer for a wave no longer asking), ROLLBACK (roll the plan back now:
-- the failure budget), WAIT, PAUSED, RUNNING, BAKING, AWAITING_APPROVAL, AWAITING_WINDOW,
-- GATE (ask the gate webhook, then call again with GATE_OK or GATE_FAIL), DONE, HALTED.
local plan_key, timers_key, events_key, queue_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local plan_id, now, op, by, reason = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local wave_prefix, recheck, op_wave, task_prefix = ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9]
local window, a1, a2, hold = ARGV[10], ARGV[11], ARGV[12], tonumber(ARGV[13])

local p = redis.call('HMGET', plan_key, 'waves', 'wave', 'waveState', 'bakeUntil', 'bakeMs',
  'approval', 'gate', 'control', 'pendingRollback', 'eventsMaxlen', 'c:RUNNING', 'promoteAll',
  'budgetMax', 'budgetScope')
if not p[1] then
  redis.call('ZREM', timers_key, plan_id)
  return {'NONE', '0', '', ''}
end
local waves, wave, state = tonumber(p[1]), tonumber(p[2]), p[3]
local bake, approval, gate, control, maxlen = tonumber(p[5] or '0'), p[6], p[7] or '', p[8], p[10]
local rolling, promote_all = p[9] == '1', p[12] == '1'
local started = '0'

local function wkey(w, name) return 'w:' .. w .. ':' .. name end
local function set_state(s)
  state = s
  redis.call('HSET', plan_key, 'waveState', s, 'updatedAt', now)
end
local function out(outcome, detail)
  return {outcome, started, tostring(wave), detail or gate}
end
local function event(kind, extra)
  local fields = {'type', kind, 'planId', plan_id, 'wave', wave}
  for _, v in ipairs(extra or {}) do fields[#fields + 1] = v end
  fields[#fields + 1] = 'ts'
  fields[#fields + 1] = now
  emit(events_key, maxlen, fields)
end
local function approve(why)
  redis.call('HSET', plan_key, wkey(wave, 'approvedBy'), by, wkey(wave, 'approvedAt'), now)
  event('WAVE_APPROVED', {'by', by, 'reason', why})
  set_state('APPROVED')
end
local GATE_FIELDS = {'gateStatus', 'gateAnswer', 'gateCheckedAt', 'gateNextAt', 'gateRefusals'}

-- ---- operator ops on the waves ---------------------------------------------------------
if op == 'APPROVE' then
  -- bound to its wave: a late or redelivered approval of an earlier wave approves nothing
  if rolling then return {'ROLLING_BACK', '0', tostring(wave), ''} end
  local w = tonumber(op_wave)
  if state == 'AWAITING_APPROVAL' then
    if w ~= wave then return {'WRONG_WAVE', '0', tostring(wave), state} end
  else
    local who = w and redis.call('HGET', plan_key, wkey(w, 'approvedBy'))
    if who then return {'ALREADY', '0', tostring(w), who} end
    return {'REFUSED', '0', tostring(wave), state or ''}
  end
  approve(reason)
elseif op == 'PROMOTE' then
  -- end the current wave's bake now (or skip it when it comes); `all`: every later one too
  if rolling then return {'ROLLING_BACK', '0', tostring(wave), ''} end
  if state == 'DONE' or state == 'HALTED' then return {'NOTHING', '0', tostring(wave), state} end
  if op_wave ~= '' and tonumber(op_wave) ~= wave then
    return {'WRONG_WAVE', '0', tostring(wave), state}
  end
  local all, with_approval = a1 == '1', a2 == '1'
  if state == 'AWAITING_APPROVAL' and not with_approval then
    return {'APPROVAL_REQUIRED', '0', tostring(wave), state}
  end
  redis.call('HSET', plan_key, wkey(wave, 'noBake'), '1', wkey(wave, 'promotedBy'), by,
    wkey(wave, 'promotedAt'), now)
  if all then
    redis.call('HSET', plan_key, 'promoteAll', '1')
    promote_all = true
    if with_approval and approval ~= 'none' then
      redis.call('HSET', plan_key, 'approval', 'none', 'approvalWaivedBy', by)
      approval = 'none'
    end
  end
  event('WAVE_PROMOTED', {'all', all and '1' or '0', 'approve', with_approval and '1' or '0',
    'by', by, 'reason', reason})
  if state == 'AWAITING_APPROVAL' then approve('promoted' .. (reason ~= '' and ': ' .. reason or '')) end
  if state == 'BAKING' then p[4] = tostring(now) end
elseif op == 'BUDGET' then
  -- raise, lower or reset the failure budget (the failures so far forgiven) and go on
  if not p[13] then return {'NO_BUDGET', '0', tostring(wave), ''} end
  if rolling then return {'ROLLING_BACK', '0', tostring(wave), ''} end
  local scope = p[14] or 'plan'
  local max_key = scope == 'wave' and wkey(wave, 'budget') or 'budgetMax'
  local before = redis.call('HGET', plan_key, max_key) or ''
  if a1 ~= '' then
    local limits = cjson.decode(a1)
    if limits.plan then redis.call('HSET', plan_key, 'budgetMax', limits.plan) end
    for w, n in pairs(limits.waves or {}) do redis.call('HSET', plan_key, wkey(w, 'budget'), n) end
  end
  if a2 == '1' then
    if scope == 'wave' then
      redis.call('HSET', plan_key, wkey(wave, 'forgiven'),
        redis.call('HGET', plan_key, wkey(wave, 'c:FAILED')) or '0')
    else
      redis.call('HSET', plan_key, 'budgetForgiven', redis.call('HGET', plan_key, 'c:FAILED') or '0')
    end
  end
  local after = redis.call('HGET', plan_key, max_key) or ''
  redis.call('HDEL', plan_key, 'budgetExceededUsed', 'budgetExceededMax', 'budgetExceededWave',
    'budgetExceededAt')
  local stop = redis.call('HGET', plan_key, 'stopReason') or ''
  if string.sub(stop, 1, 14) == 'failure budget' then redis.call('HDEL', plan_key, 'stopReason') end
  event('BUDGET_CHANGED', {'scope', scope, 'from', before, 'to', after, 'reset', a2 == '1' and '1' or '0',
    'by', by, 'reason', reason})
  redis.call('HSET', plan_key, 'updatedAt', now)
  return {'BUDGET', '0', tostring(wave), after}
elseif op == 'GATE_OK' or op == 'GATE_FAIL' then
  -- the answer of a call made for wave op_wave: worth nothing once that wave stopped asking
  if state ~= 'AWAITING_GATE' or tonumber(op_wave) ~= wave then
    return {'STALE', '0', tostring(wave), state or ''}
  end
end

if op == 'HALT' then
  -- A rollback or cancel of the whole plan ends its waves (no later wave starts).
  if state ~= 'DONE' and state ~= 'HALTED' then
    set_state('HALTED')
    redis.call('HSET', plan_key, 'stopReason', reason)
    redis.call('HDEL', plan_key, 'bakeUntil')
    event('WAVE_HALTED', {'by', by, 'reason', reason})
  end
  if not rolling then redis.call('ZREM', timers_key, plan_id) end
  derive_plan(plan_key)
  return out('HALTED')
end
if rolling then
  if op == 'ROLLBACK_DONE' then
    redis.call('HDEL', plan_key, 'pendingRollback')
    redis.call('ZREM', timers_key, plan_id)
    derive_plan(plan_key)
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
  redis.call('HDEL', plan_key, 'bakeUntil')
  redis.call('ZREM', timers_key, plan_id)
  derive_plan(plan_key)
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
local function bake_of(w)
  if promote_all or redis.call('HGET', plan_key, wkey(w, 'noBake')) == '1' then return 0 end
  return bake
end
-- asking the gate: whoever gets GATE makes the call; nobody else asks while it may be out
local function ask_gate()
  redis.call('ZADD', timers_key, now + hold, plan_id)
  return out('GATE')
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
    redis.call('HSET', plan_key, wkey(wave, 'endedAt'), now)
    local b = bake_of(wave)
    if b > 0 then
      set_state('BAKING')
      redis.call('HSET', plan_key, 'bakeUntil', now + b)
      redis.call('ZADD', timers_key, now + b, plan_id)
      event('WAVE_BAKING', {'until', now + b})
      return out('BAKING')
    end
    state = 'BAKED'
  elseif state == 'BAKING' then
    local until_ms = tonumber(p[4] or '0')
    if bake_of(wave) == 0 then until_ms = 0 end  -- promoted while it baked
    if now < until_ms then
      redis.call('ZADD', timers_key, until_ms, plan_id)
      return out('BAKING')
    end
    state = 'BAKED'
  elseif state == 'BAKED' then
    redis.call('HDEL', plan_key, 'bakeUntil')
    event('WAVE_DONE')
    if wave + 1 >= waves then
      -- the last wave's bake is over: only now is the plan done (derive_plan holds it)
      set_state('DONE')
      redis.call('ZREM', timers_key, plan_id)
      derive_plan(plan_key)
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
  elseif state == 'APPROVED' or state == 'AWAITING_WINDOW' then
    -- no wave starts outside the maintenance window (a running one finishes)
    if window ~= '' and window ~= 'OPEN' then
      local opens = tonumber(string.sub(window, 8)) or (now + 60000)
      if state ~= 'AWAITING_WINDOW' then
        set_state('AWAITING_WINDOW')
        event('WAVE_AWAITING_WINDOW', {'opensAt', opens})
      end
      redis.call('HSET', plan_key, 'windowOpensAt', opens)
      redis.call('ZADD', timers_key, opens, plan_id)
      return out('AWAITING_WINDOW')
    end
    if state == 'AWAITING_WINDOW' then
      redis.call('HDEL', plan_key, 'windowOpensAt')
      event('WAVE_WINDOW_OPEN')
    end
    if gate ~= '' then
      set_state('AWAITING_GATE')
      return ask_gate()
    end
    state = 'START'
  elseif state == 'AWAITING_GATE' then
    if op == 'GATE_OK' then
      event('WAVE_GATE_PASSED', {'gate', gate, 'status', a1})
      state = 'START'
    elseif op == 'GATE_FAIL' then
      -- held: ask again after the re-check interval; recorded for status, events, dashboard
      local prev = redis.call('HMGET', plan_key, 'gateStatus', 'gateAnswer')
      local n = redis.call('HINCRBY', plan_key, 'gateRefusals', 1)
      redis.call('HSET', plan_key, 'gateStatus', a1, 'gateAnswer', a2, 'gateCheckedAt', now,
        'gateNextAt', now + recheck)
      redis.call('ZADD', timers_key, now + recheck, plan_id)
      if n == 1 or prev[1] ~= a1 or prev[2] ~= a2 then
        -- an event when the answer changes (not one per re-check of a gate held for hours)
        event('WAVE_GATE_REFUSED', {'gate', gate, 'status', a1, 'answer', a2,
          'nextCheck', now + recheck, 'refusals', n})
      end
      return out('WAIT')
    else
      -- not asked yet, or due again: ask; a call out (or a re-check to come) is waited for
      local due = redis.call('ZSCORE', timers_key, plan_id)
      if due and tonumber(due) > now then return out('WAIT') end
      return ask_gate()
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
    redis.call('HSET', plan_key, wkey(wave, 'startedAt'), now)
    redis.call('HDEL', plan_key, unpack(GATE_FIELDS))
    set_state('RUNNING')
    started = '1'
    event('WAVE_STARTED', {'tenants', #ids})
  elseif state == 'AWAITING_APPROVAL' then
    redis.call('ZREM', timers_key, plan_id)
    return out('AWAITING_APPROVAL')
  else
    redis.call('ZADD', timers_key, now + 1000, plan_id)
    return out('WAIT')
  end
end
redis.call('ZADD', timers_key, now + 1000, plan_id)
return out('WAIT')
