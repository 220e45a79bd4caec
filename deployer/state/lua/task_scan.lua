-- Read-only: one bounded slice of a plan's tenant list, filtered by status and/or a
-- substring of the tenant id, server-side (one round trip instead of thousands of HMGETs).
-- KEYS[1] plan tenants list
-- ARGV: start, stop (inclusive), limit, status ('' = any), needle ('' = any, lower case),
--       task key prefix, task id prefix (the tenant id follows it)
-- Returns {next position, task id, ...}: the position after the last task looked at.
local start, stop, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local status, needle, task_prefix, id_prefix = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local ids = redis.call('LRANGE', KEYS[1], start, stop)
local out = {0}
local found = 0
local position = start
for i, task_id in ipairs(ids) do
  position = start + i
  local ok = true
  if needle ~= '' then
    local tenant = string.lower(string.sub(task_id, #id_prefix + 1))
    ok = string.find(tenant, needle, 1, true) ~= nil
  end
  if ok and status ~= '' then
    ok = redis.call('HGET', task_prefix .. task_id, 'status') == status
  end
  if ok then
    found = found + 1
    out[#out + 1] = task_id
    if found >= limit then break end
  end
end
if #ids == 0 then position = start end
out[1] = position
return out
