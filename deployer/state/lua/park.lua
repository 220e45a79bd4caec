-- Park a waiting HealthCheck (deployer/parking.py): its re-send waits in Redis, due at
-- `due_ms` or earlier when an instance it waits for acks the version. One parked re-send
-- per task (the zset member is the task id): a duplicate of the stage that parks again
-- replaces the entry instead of forking the chain.
-- KEYS: task, parked zset, park hash of the task, tenant's park pointer, tenant's acks
-- ARGV: token, due_ms, now_ms, task_id, tenant_id, service, version ('' = any), position
--       (token:stage:step:attempt of the re-send), sig (JSON), pointer_ttl_ms, instances...
-- Returns {'OK', due} parked; {'NOW'} an instance it waits for acked while its poll ran:
-- nothing parked, the caller re-sends at once; {'STALE'} the run lost the task's token.
local task_key, parked, park_key, tenant_key, acks_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, due, task_id, service, version = ARGV[1], ARGV[2], ARGV[4], ARGV[6], ARGV[7]
if redis.call('HGET', task_key, 'token') ~= token then return {'STALE'} end
local waiting, acked = {'\n'}, false
for i = 11, #ARGV do
  local field = service .. '|' .. ARGV[i]
  local v = redis.call('HGET', acks_key, field)
  if v and (version == '' or v == version) then
    redis.call('HDEL', acks_key, field)  -- an ack wakes one poll, never a loop of them
    acked = true
  end
  waiting[#waiting + 1] = ARGV[i] .. '\n'
end
if acked then
  redis.call('ZREM', parked, task_id)
  redis.call('DEL', park_key)
  return {'NOW'}
end
redis.call('DEL', park_key)
redis.call('HSET', park_key, 'sig', ARGV[9], 'token', token, 'tenant', ARGV[5],
  'service', service, 'version', version, 'waiting', table.concat(waiting), 'at', ARGV[8])
redis.call('ZADD', parked, due, task_id)
redis.call('SET', tenant_key, task_id, 'PX', ARGV[10])
return {'OK', due}
