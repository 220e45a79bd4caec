-- Make a plan written in slices visible at once: tenant pointers, then the plan hash last
-- (the same fields as plan_create.lua writes), then release the claim.
-- KEYS: plan, plans index, events, plan tenants list, claim, plan timers
-- ARGV: plan_id, now_ms, max_concurrency, events_maxlen, tenant_key_prefix,
--       task_id_prefix, token, digest, wave_mode ('' no strategy | RUNNING: wave 0 started |
--       GATE: wave 0 waits for its gate), n_extra, then (field, value) pairs for the plan hash
-- Returns 1, or 0 when the claim is no longer this creator's.
local plan_key, plans_key, events_key, tenants_key, claim_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local plan_id, now, max_concurrency, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local tenant_prefix, task_id_prefix, token, digest = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if redis.call('GET', claim_key) ~= token then return 0 end
local count = redis.call('LLEN', tenants_key)
local skip = #task_id_prefix
for start = 0, count - 1, 1000 do
  local pointers = {}
  for _, task_id in ipairs(redis.call('LRANGE', tenants_key, start, start + 999)) do
    pointers[#pointers + 1] = tenant_prefix .. string.sub(task_id, skip + 1)
    pointers[#pointers + 1] = task_id
  end
  redis.call('MSET', unpack(pointers))
end
redis.call('HSET', plan_key, 'planId', plan_id, 'status', 'RUNNING',
  'maxConcurrency', max_concurrency, 'total', count, 'inflight', 0, 'c:PENDING', count,
  'createdAt', now, 'updatedAt', now, 'digest', digest)
local n_extra = tonumber(ARGV[10] or '0')
if n_extra > 0 then
  local extra = {}
  for i = 11, 10 + 2 * n_extra do extra[#extra + 1] = ARGV[i] end
  redis.call('HSET', plan_key, unpack(extra))
end
redis.call('ZADD', plans_key, now, plan_id)
emit(events_key, maxlen, {'type', 'PLAN_CREATED', 'planId', plan_id, 'tasks', count, 'ts', now})
if ARGV[9] == 'RUNNING' then
  emit(events_key, maxlen, {'type', 'WAVE_STARTED', 'planId', plan_id, 'wave', 0,
    'tenants', redis.call('HGET', plan_key, 'w:0:n'), 'ts', now})
elseif ARGV[9] == 'GATE' then
  redis.call('ZADD', KEYS[6], now, plan_id)
end
redis.call('DEL', claim_key)
return 1
