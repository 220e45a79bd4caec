-- One tick of a worker's parking thread (deployer/parking.py): forget the re-sends it sent
-- since the last tick, apply the acks it received, pop what is due.
-- KEYS: parked zset, this worker's sends hash (task id -> position; read by the liveness
--       sweep if the worker dies between popping a re-send and sending it)
-- ARGV: now_ms, limit, sends_ttl_ms, park prefix, park pointer prefix, acks prefix, task
--       prefix, acks_ttl_ms, n_sent, sent task ids..., then per ack: tenant, service,
--       instance, version
-- Returns {woken, next due ms or '', task_id, sig, task_id, sig, ...}
local parked, sends = KEYS[1], KEYS[2]
local now, limit, sends_ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local park_p, pointer_p, acks_p, task_p, acks_ttl = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local n_sent = tonumber(ARGV[9])
for i = 10, 9 + n_sent do redis.call('HDEL', sends, ARGV[i]) end

local woken = 0
for i = 10 + n_sent, #ARGV - 3, 4 do
  local tenant, service, instance, version = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local id = redis.call('GET', pointer_p .. tenant)
  if id then  -- only tenants with a HealthCheck parked lately: junk acks leave nothing behind
    local e = redis.call('HMGET', park_p .. id, 'service', 'version', 'waiting')
    local score = redis.call('ZSCORE', parked, id)
    if e[3] and score and e[1] == service and (e[2] == '' or e[2] == version)
        and string.find(e[3], '\n' .. instance .. '\n', 1, true) then
      if tonumber(score) > now then
        redis.call('ZADD', parked, now, id)
        woken = woken + 1
      end
    else
      -- Not parked right now (its poll may be running): the next park of the tenant reads it.
      redis.call('HSET', acks_p .. tenant, service .. '|' .. instance, version)
      redis.call('PEXPIRE', acks_p .. tenant, acks_ttl)
    end
  end
end

local out = {woken, ''}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', parked, '-inf', now, 'LIMIT', 0, limit)) do
  local e = redis.call('HMGET', park_p .. id, 'sig', 'token', 'at')
  redis.call('ZREM', parked, id)
  redis.call('DEL', park_p .. id)
  -- A re-send of a run that lost the task (re-driven, retried, rolled back) is dropped here.
  if e[1] and e[2] and redis.call('HGET', task_p .. id, 'token') == e[2] then
    redis.call('HSET', sends, id, e[3])
    out[#out + 1] = id
    out[#out + 1] = e[1]
  end
end
if #out > 2 then redis.call('PEXPIRE', sends, sends_ttl) end
local first = redis.call('ZRANGE', parked, 0, 0, 'WITHSCORES')
if first[2] then out[2] = first[2] end
return out
