-- Create a plan with all its tasks, tenant pointers and queue, or nothing if it exists.
-- One script instead of a WATCHed MULTI/EXEC: atomic (nobody sees half a plan, and of two
-- submitters of one plan id exactly one writes), and the caller sends three short strings
-- per tenant instead of a dozen-field HSET, which was most of a big plan's submit time.
-- A task stores its config only; its stage specs and context are built when it is first
-- dispatched (deployer/planner.py), so a 10,000-tenant plan costs that for one wave.
-- KEYS: plan, plans index, events, plan tenants list, plan queue, creation claim, plan timers
-- ARGV: plan_id, now_ms, max_concurrency, events_maxlen, task_key_prefix,
--       tenant_key_prefix, task_id_prefix, run_id_prefix, digest,
--       wave_json ('' = no strategy; else a JSON array: each task's wave index),
--       wave_key_prefix, n_extra, then n_extra (field, value) pairs for the plan hash,
--       then per task: tenant_id, total_stages, config_json
-- With a strategy, a task also stores its `wave`, is listed in its wave's list,
-- and only wave 0 enters the queue (and only when the plan's waveState starts RUNNING).
-- The digest of the validated plan (deployer/intake.py plan_digest) is kept in the plan
-- hash: a later submit of the same planId compares it (duplicate or PLAN_CONFLICT).
local plan_key, plans_key, events_key, tenants_key, queue_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local plan_id, now, max_concurrency, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local task_prefix, tenant_prefix, task_id_prefix, run_prefix = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local digest = ARGV[9]
if redis.call('EXISTS', plan_key) == 1 then return 0 end
local wave_of, wave_prefix, n_extra = nil, ARGV[11], tonumber(ARGV[12])
if ARGV[10] ~= '' then wave_of = cjson.decode(ARGV[10]) end
local extra, queue_wave0 = {}, true
for i = 1, n_extra do
  local f, v = ARGV[11 + 2 * i], ARGV[12 + 2 * i]
  extra[#extra + 1] = f
  extra[#extra + 1] = v
  if f == 'waveState' and v ~= 'RUNNING' then queue_wave0 = false end
end
local FIXED = 12 + 2 * n_extra
-- a big plan of this id is being written in slices (plan_claim.lua): the caller waits
if redis.call('EXISTS', KEYS[6]) == 1 then return -1 end

local count = (#ARGV - FIXED) / 3
local ids, pointers, queued = {}, {}, {}
-- unpack() is bounded by Lua's C stack (8,000 values): 1,000 tasks per command
local function flush()
  if #ids > 0 then
    redis.call('RPUSH', tenants_key, unpack(ids))
    if #queued > 0 then redis.call('RPUSH', queue_key, unpack(queued)) end
    redis.call('MSET', unpack(pointers))
    ids, pointers, queued = {}, {}, {}
  end
end
for n = 1, count do
  local i = FIXED + 3 * (n - 1) + 1
  local tenant_id = ARGV[i]
  local task_id = task_id_prefix .. tenant_id  -- = models.task_id_for(plan_id, tenant_id)
  local wave = wave_of and wave_of[n]
  if store_new_task(task_prefix, task_id, plan_id, tenant_id, ARGV[i + 2],
      run_prefix .. string.format('%x', n), ARGV[i + 1], now, wave, wave_prefix, queue_wave0) then
    queued[#queued + 1] = task_id
  end
  ids[#ids + 1] = task_id
  pointers[#pointers + 1] = tenant_prefix .. tenant_id
  pointers[#pointers + 1] = task_id
  if #ids == 1000 then flush() end
end
flush()
redis.call('HSET', plan_key, 'planId', plan_id, 'status', 'RUNNING',
  'maxConcurrency', max_concurrency, 'total', count, 'inflight', 0, 'c:PENDING', count,
  'createdAt', now, 'updatedAt', now, 'digest', digest)
if n_extra > 0 then redis.call('HSET', plan_key, unpack(extra)) end
redis.call('ZADD', plans_key, now, plan_id)
emit(events_key, maxlen, {'type', 'PLAN_CREATED', 'planId', plan_id, 'tasks', count, 'ts', now})
if wave_of and queue_wave0 then
  emit(events_key, maxlen, {'type', 'WAVE_STARTED', 'planId', plan_id, 'wave', 0,
    'tenants', redis.call('HGET', plan_key, 'w:0:n'), 'ts', now})
elseif wave_of then
  -- wave 0 waits for its gate: the wave step (deployer/waves.py) asks it right away
  redis.call('ZADD', KEYS[7], now, plan_id)
end
return 1
