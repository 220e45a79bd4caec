-- The KeyValueWrite step: service field + metadata in one atomic, fenced round trip.
-- KEYS: config hash, fence key
-- ARGV: token, field, value_json, metadata_json ('' = no version: delete stale metadata),
--       n_delete, delete fields..., [channel, message]
-- With channel and message (RedisAck: write then broadcast), the message is published once
-- the write landed, in the same round trip; a refused write publishes nothing (as before,
-- when the Broadcast step ran only after a successful write).
local hash_key, fence_key = KEYS[1], KEYS[2]
local token, field, value, metadata = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('GET', fence_key) ~= token then return 'STALE' end
local n_delete = tonumber(ARGV[5])
for i = 1, n_delete do redis.call('HDEL', hash_key, ARGV[5 + i]) end
if metadata == '' then
  redis.call('HSET', hash_key, field, value)
  redis.call('HDEL', hash_key, 'metadata')
else
  redis.call('HSET', hash_key, field, value, 'metadata', metadata)
end
local channel = ARGV[6 + n_delete]
if channel then redis.call('PUBLISH', channel, ARGV[7 + n_delete]) end
return 'OK'
