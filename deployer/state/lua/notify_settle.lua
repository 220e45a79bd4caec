-- Notifications (deployer/notify): what this worker's attempts did. Delivered: the delivery
-- leaves its receiver's queue. Failed (not 2xx, a timeout, refused): due again after the
-- backoff (doubling from backoff_ms up to cap_ms), or given up after max_attempts; both
-- counted (K_STATS) and recorded as events (NOTIFICATION_FAILED / _DROPPED, in the
-- plan's history). A delivery that another worker settled meanwhile (this one's claim had
-- lapsed) is left as it is: it was delivered at least once.
-- KEYS: events
-- ARGV: now_ms, max_attempts, backoff_ms, cap_ms, events_maxlen,
--       then per attempt: receiver, event id, outcome ('ok' | 'fail'), detail
local events_key, now, max_attempts = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local backoff, cap, maxlen = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local settled = 0
for i = 6, #ARGV - 3, 4 do
  local name, id, outcome, detail = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local due_key = K_NOTIFY_DUE_PREFIX .. name
  local key = K_NOTIFY_EVENT_PREFIX .. id
  if redis.call('ZSCORE', due_key, id) then
    local e = redis.call('HMGET', key, 'type', 'planId', 'a:' .. name)
    local kind, plan_id, attempt = e[1] or '-', e[2] or '', tonumber(e[3] or '1') or 1
    if outcome == 'ok' then
      redis.call('ZREM', due_key, id)
      redis.call('HSET', key, 'ok:' .. name, now)
      stat('nt|' .. name .. '|' .. kind .. '|delivered')
    else
      stat('nt|' .. name .. '|' .. kind .. '|failed')
      local fields = {'type', 'NOTIFICATION_FAILED', 'planId', plan_id, 'receiver', name,
        'event', kind, 'eventId', id, 'attempt', attempt, 'error', detail}
      if attempt >= max_attempts then
        redis.call('ZREM', due_key, id)
        stat('nt|' .. name .. '|' .. kind .. '|dropped')
        fields[2] = 'NOTIFICATION_DROPPED'
      else
        local delay = backoff * 2 ^ (attempt - 1)
        if delay > cap then delay = cap end
        redis.call('ZADD', due_key, 'XX', now + math.floor(delay), id)
        fields[#fields + 1] = 'retryInMs'
        fields[#fields + 1] = math.floor(delay)
      end
      fields[#fields + 1] = 'ts'
      fields[#fields + 1] = now
      emit(events_key, maxlen, fields)
    end
    settled = settled + 1
  end
end
return settled
