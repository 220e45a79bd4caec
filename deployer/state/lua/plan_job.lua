-- A plan command working through its tasks in slices (deployer/plan_commands.py): start one
-- (replacing any other: a newer command decides), or end it.
-- KEYS: plan, job, job order, plan jobs zset, events, plan queue
-- ARGV: op (START | DONE | DROP), plan_id, now_ms, events_maxlen, then
--   START: command, by, reason, force, from_checkpoint, total, strict  -> {gen} |
--          {'ARCHIVED'} (retention marked the plan: it takes no plan command)
--   DONE:  gen, acted, already, skipped, superseded, unlink_queue ('1': only if the plan is
--          still paused)  -> {'DONE', plan status} | {'STALE'} (a newer command took over)
--   DROP:  gen as last read ('' when there was no record): a job whose record is gone or
--          unreadable -> {'DROPPED'}: the plan is no longer held by it; {'KEPT'} when
--          another job started meanwhile
-- While a job runs the plan hash holds `job` (its command): the plan is not finished before
-- its command is (derive_plan), and PLAN_<COMMAND> is recorded once, with what it did; the
-- job's record then stays an hour, marked `done`.
local plan_key, job_key, order_key, jobs_key, events_key, queue_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local op, plan_id, now, maxlen = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]

if op == 'START' then
  -- retention marked the plan (archive_mark.lua) since the command read it: no job
  local mark = redis.call('HMGET', plan_key, 'archiving', 'archivedAt')
  if mark[1] or mark[2] then return {'ARCHIVED'} end
  -- a plan's jobs are numbered for its life (a job record outlives none of its slices)
  local gen = redis.call('HINCRBY', plan_key, 'jobGen', 1)
  redis.call('DEL', job_key, order_key)
  redis.call('HSET', job_key, 'gen', gen, 'command', ARGV[5], 'by', ARGV[6], 'reason', ARGV[7],
    'force', ARGV[8], 'fromCheckpoint', ARGV[9], 'total', ARGV[10], 'fwd', 0, 'back', 0,
    'phase', '', 'startedAt', now, 'strict', ARGV[11] or '0')
  redis.call('HSET', plan_key, 'job', ARGV[5])
  redis.call('ZADD', jobs_key, now, plan_id)
  derive_plan(plan_key)
  return {tostring(gen)}
end

if op == 'DROP' then
  if (redis.call('HGET', job_key, 'gen') or '') ~= ARGV[5] then return {'KEPT'} end
  redis.call('DEL', job_key, order_key)
  redis.call('ZREM', jobs_key, plan_id)
  if redis.call('HEXISTS', plan_key, 'job') == 1 then
    redis.call('HDEL', plan_key, 'job')
    derive_plan(plan_key)
  end
  return {'DROPPED'}
end

-- DONE
if redis.call('HGET', job_key, 'gen') ~= ARGV[5] then return {'STALE'} end
if redis.call('EXISTS', plan_key) == 0 then
  -- the plan left Redis meanwhile (retention): nothing to record it in
  redis.call('DEL', job_key, order_key)
  redis.call('ZREM', jobs_key, plan_id)
  return {'DONE', ''}
end
local command = redis.call('HGET', job_key, 'command') or ''
local j = redis.call('HMGET', job_key, 'by', 'reason')
-- the record stays a while, marked done: a command waiting on its job reads what it did
redis.call('HSET', job_key, 'done', '1')
redis.call('PEXPIRE', job_key, 3600000)
redis.call('DEL', order_key)
redis.call('HDEL', plan_key, 'job')
redis.call('ZREM', jobs_key, plan_id)
if ARGV[10] == '1' and redis.call('HGET', plan_key, 'control') == 'PAUSE' then
  -- every task of the paused plan was decided: its queue holds only stale entries now
  redis.call('UNLINK', queue_key)
end
local status = derive_plan(plan_key)
local fields = {'type', 'PLAN_' .. string.upper(command), 'planId', plan_id, 'by', j[1] or '',
  'reason', j[2] or '', 'acted', ARGV[6], 'already', ARGV[7], 'skipped', ARGV[8]}
if ARGV[9] ~= '0' then
  fields[#fields + 1] = 'superseded'
  fields[#fields + 1] = ARGV[9]
end
fields[#fields + 1] = 'ts'
fields[#fields + 1] = now
emit(events_key, maxlen, fields)
return {'DONE', status}
