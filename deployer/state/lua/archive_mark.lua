-- Retention (deployer/retention.py): mark a plan whose archive copy was just committed as
-- archived, if it is still what was archived: finished, nothing in progress, not changed
-- since. Only then may its keys be removed (archive_drop.lua); a plan that moved meanwhile
-- (a rollback of one of its tasks) is left live and archived again later.
-- Everything that keeps a plan live is checked here, in the one script that marks it: a
-- command that starts after the copy changed the plan hash (digest) or holds a job, timer,
-- approval or rollback (LIVE); one that starts after the mark is refused by its own script
-- (plan_control.lua, plan_job.lua, task_command.lua read `archiving`/`archivedAt`).
-- KEYS: plan, archiving lock, plan timers, plan jobs, awaiting approval, creation claim,
--       plan job
-- ARGV: lock token, plan id, updatedAt as archived, now_ms, digest of the plan hash as
--       archived (sha1 of `name \0 value \0` of each field, in the order of the names
--       that follow), then every field name of the hash as archived
-- Reply: 'OK' | 'LOCK' (our lock is gone) | 'GONE' | 'LIVE' (not finished) | 'CHANGED'
local plan_key, lock_key = KEYS[1], KEYS[2]
local token, plan_id, updated, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('GET', lock_key) ~= token then return 'LOCK' end
if redis.call('EXISTS', plan_key) == 0 then return 'GONE' end
local p = redis.call('HMGET', plan_key, 'status', 'c:PENDING', 'c:RUNNING', 'c:PAUSED',
  'c:ROLLING_BACK', 'job', 'pendingRollback', 'updatedAt')
local ENDED = {COMPLETED = true, FAILED = true, CANCELLED = true, ROLLED_BACK = true}
if not ENDED[p[1]] then return 'LIVE' end
for i = 2, 5 do
  if (tonumber(p[i] or '0') or 0) ~= 0 then return 'LIVE' end
end
if p[6] or p[7] == '1' then return 'LIVE' end
if redis.call('ZSCORE', KEYS[3], plan_id) or redis.call('ZSCORE', KEYS[4], plan_id)
    or redis.call('ZSCORE', KEYS[5], plan_id) or redis.call('EXISTS', KEYS[6]) == 1 then
  return 'LIVE'
end
-- a plan command's job not marked done (a finished one's record stays an hour, harmless)
if redis.call('EXISTS', KEYS[7]) == 1 and redis.call('HGET', KEYS[7], 'done') ~= '1' then
  return 'LIVE'
end
if (p[8] or '') ~= updated then return 'CHANGED' end
-- the hash as archived: the same fields (in the order given, no more) with the same values
local names = {}
for i = 6, #ARGV do names[#names + 1] = ARGV[i] end
if redis.call('HLEN', plan_key) ~= #names then return 'CHANGED' end
local parts = {}
if #names > 0 then
  local values = redis.call('HMGET', plan_key, unpack(names))
  for i, name in ipairs(names) do
    if not values[i] then return 'CHANGED' end
    parts[#parts + 1] = name .. '\0' .. values[i] .. '\0'
  end
end
if redis.sha1hex(table.concat(parts)) ~= ARGV[5] then return 'CHANGED' end
redis.call('HSET', plan_key, 'archivedAt', now, 'archiving', '1')
return 'OK'
