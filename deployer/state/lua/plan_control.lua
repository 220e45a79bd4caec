-- Set or clear a plan-wide control flag and re-derive the plan's status.
-- KEYS: plan, events   ARGV: control ('' clears), by, reason, now_ms, event_type ('' = none),
--       events_maxlen
-- {'ARCHIVED'}: retention marked the plan (archive_mark.lua): it takes no plan command.
local plan_key, events_key = KEYS[1], KEYS[2]
if redis.call('EXISTS', plan_key) == 0 then return {'MISSING'} end
local mark = redis.call('HMGET', plan_key, 'archiving', 'archivedAt')
if mark[1] or mark[2] then return {'ARCHIVED'} end
local control, by, reason, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if control == '' then
  redis.call('HDEL', plan_key, 'control', 'controlBy', 'controlReason')
else
  redis.call('HSET', plan_key, 'control', control, 'controlBy', by, 'controlReason', reason)
end
local status = derive_plan(plan_key)
-- event_type '': the caller records the command once it knows what it did (deployer/control.py)
if ARGV[5] ~= '' then
  emit(events_key, ARGV[6], {'type', ARGV[5], 'planId', redis.call('HGET', plan_key, 'planId'),
    'by', by, 'reason', reason, 'ts', now})
end
return {'OK', status}
