-- End a run that failed: status, reason, code, lease, slot and event together (fail_task).
-- KEYS: task, plan, lease, inflight, events
-- ARGV: token, stage_name, now_ms, reason, events_maxlen,
--       plan_id, tenant_id (as the message says: checked against the stored task),
--       failure_code (a deployer.errors.Code, stored as `failureCode`)
local token, stage_name, now, reason, maxlen = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local t = redis.call('HMGET', KEYS[1], 'token', 'status', 'taskId', 'tenantId', 'planId', 'runKind')
if forged(t[3], t[5], t[4], ARGV[6], ARGV[7]) then return {'FORGED', (t[5] or '') .. '/' .. (t[4] or '')} end
if t[1] ~= token then return {'STALE', t[2] or ''} end
local status = t[2]
if status ~= 'ROLLING_BACK' and status ~= 'RUNNING' and status ~= 'PENDING' then return {'STALE', status} end
local new_status = failed_status(status, t[6])
local old = fail_task(KEYS, t[3], t[5], t[4], new_status, stage_name, reason, ARGV[8] or '', token,
  now, maxlen, '')
return {new_status, old}
