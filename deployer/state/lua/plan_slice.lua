-- One slice of a big plan's tasks, written while the plan is invisible: no plan hash and
-- no tenant pointer exist yet, so no command, fill or reader reaches these tasks.
-- KEYS: claim, plan tenants list, plan queue
-- ARGV: token, ttl_ms, plan_id, now_ms, task_key_prefix, task_id_prefix, run_id_prefix,
--       first (position of the slice's first task, from 1),
--       wave_json ('' = no strategy; else a JSON array: the slice's tasks' wave indexes),
--       wave_key_prefix, queue_wave0 ('1': wave 0 starts at once), n_waves,
--       then per task: tenant_id, total_stages, config_json
-- With a strategy a task stores its `wave`, is listed in its wave's list, and
-- only wave 0 enters the queue (as in plan_create.lua).
-- Returns 1, or 0 when the claim is no longer this creator's (nothing written).
local claim_key, tenants_key, queue_key = KEYS[1], KEYS[2], KEYS[3]
if redis.call('GET', claim_key) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', claim_key, ARGV[2])
local plan_id, now, task_prefix, task_id_prefix, run_prefix = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local first = tonumber(ARGV[8])
local wave_of, wave_prefix, queue_wave0 = nil, ARGV[10], ARGV[11] == '1'
if ARGV[9] ~= '' then wave_of = cjson.decode(ARGV[9]) end
if wave_of and first == 1 then
  -- a creator that died mid-way may have left wave lists (plan_claim cleared the others)
  for w = 0, tonumber(ARGV[12]) - 1 do redis.call('DEL', wave_prefix .. w) end
end
local FIXED = 12
local ids, queued = {}, {}
-- unpack() is bounded by Lua's C stack (8,000 values): 1,000 tasks per command
local function flush()
  if #ids > 0 then
    redis.call('RPUSH', tenants_key, unpack(ids))
    if #queued > 0 then redis.call('RPUSH', queue_key, unpack(queued)) end
    ids, queued = {}, {}
  end
end
for n = 1, (#ARGV - FIXED) / 3 do
  local i = FIXED + 3 * (n - 1) + 1
  local task_id = task_id_prefix .. ARGV[i]
  local wave = wave_of and wave_of[n]
  if store_new_task(task_prefix, task_id, plan_id, ARGV[i], ARGV[i + 2],
      run_prefix .. string.format('%x', first + n - 1), ARGV[i + 1], now, wave, wave_prefix,
      queue_wave0) then
    queued[#queued + 1] = task_id
  end
  ids[#ids + 1] = task_id
  if #ids == 1000 then flush() end
end
flush()
return 1
