-- Notifications (deployer/notify): hand new outbox events to the receivers that want them,
-- then claim each receiver's due deliveries for this worker. A claim moves the delivery's
-- due time past the end of this worker's attempt (position in its batch x the call's
-- deadline + a margin): a worker that dies mid-delivery leaves it due again then, for any
-- worker to deliver (at least once; the receiver dedupes on the idempotency key).
-- Each claim also keeps K_NOTIFY_ACTIVE alive for active_ms: events are queued
-- while it exists (the Lua prelude), so a worker restarted within that time misses nothing.
-- KEYS: outbox, active
-- ARGV: now_ms, batch, call_ms, margin_ms, active_ms, then per receiver: name, events (comma
--       separated), claim ('1': claim for it now; '0': its worker thread is still busy)
-- Returns flat records: receiver, event id, attempt, event fields as JSON.
local outbox, now, batch = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local call_ms, margin_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('SET', KEYS[2], now, 'PX', ARGV[5])
local receivers = {}
for i = 6, #ARGV - 2, 3 do
  local wants = {}
  for name in string.gmatch(ARGV[i + 1], '[^,]+') do wants[name] = true end
  receivers[#receivers + 1] = {name = ARGV[i], wants = wants, claim = ARGV[i + 2] == '1'}
end
local function event_key(id) return K_NOTIFY_EVENT_PREFIX .. id end
local function due_key(name) return K_NOTIFY_DUE_PREFIX .. name end

-- 1. fan out: every new event to the queue of each receiver that wants its type
for _, id in ipairs(redis.call('ZRANGE', outbox, 0, 499)) do
  local kind = redis.call('HGET', event_key(id), 'type')
  if kind then
    for _, r in ipairs(receivers) do
      if r.wants[kind] then redis.call('ZADD', due_key(r.name), 'NX', now, id) end
    end
  end
  redis.call('ZREM', outbox, id)
end

-- 2. claim what is due, per receiver that can take a batch now
local out = {}
for _, r in ipairs(receivers) do
  if r.claim then
    local due = redis.call('ZRANGEBYSCORE', due_key(r.name), '-inf', now, 'LIMIT', 0, batch)
    local n = 0
    for _, id in ipairs(due) do
      local fields = redis.call('HGETALL', event_key(id))
      if #fields == 0 then
        -- expired (DEPLOYER_NOTIFY_RETENTION_SECONDS) before it could be delivered
        redis.call('ZREM', due_key(r.name), id)
        redis.call('HINCRBY', K_STATS, 'nt|' .. r.name .. '|-|dropped', 1)
      else
        n = n + 1
        redis.call('ZADD', due_key(r.name), 'XX', now + n * call_ms + margin_ms, id)
        local attempt = redis.call('HINCRBY', event_key(id), 'a:' .. r.name, 1)
        local map = {}
        for j = 1, #fields - 1, 2 do map[fields[j]] = fields[j + 1] end
        out[#out + 1] = r.name
        out[#out + 1] = id
        out[#out + 1] = tostring(attempt)
        out[#out + 1] = cjson.encode(map)
      end
    end
  end
end
return out
