-- Retention (deployer/retention.py): remove one slice of an archived plan from Redis.
-- The plan is marked (archive_mark.lua: its archive copy is committed); this pops at most
-- `n` task ids off the plan's tenant list and deletes each task hash, its watch entry and
-- the tenant's event references to this plan, except a task that is its tenant's newest
-- (rollback, diff and the superseded rule read it): that one moves to the plan's kept list.
-- When the list is empty, the plan's other keys go (event stream, queue, waves, job); the
-- plan hash and index entry too when no task was kept, else the kept list becomes the
-- plan's tenant list (the plan stays, small, until a newer task replaces its last one).
-- A slice that dies half way is redone from where the list stands: every step is idempotent.
-- KEYS: plan, tenants, kept, lock, plan events stream, inflight, plans index, plan timers,
--       plan jobs, awaiting approval, queue, job, job order, job lock, creation claim
-- ARGV: lock token, plan id, n, task key prefix, tenant pointer prefix, tenant events
--       prefix, wave key prefix
-- Reply: {'MORE'|'DONE'|'KEPT'|'LOCK'|'NOT_MARKED', removed, kept (in all, at the end)}
local plan_key, tenants_key, kept_key, lock_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, plan_id, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local task_prefix, tenant_prefix, refs_prefix, wave_prefix = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if redis.call('GET', lock_key) ~= token then return {'LOCK', 0, 0} end
if redis.call('HGET', plan_key, 'archiving') ~= '1' then return {'NOT_MARKED', 0, 0} end

local suffix = ' ' .. plan_id
local function drop_refs(tenant_id)
  local key = refs_prefix .. tenant_id
  local refs = redis.call('LRANGE', key, 0, -1)
  local keep, dropped = {}, 0
  for _, ref in ipairs(refs) do
    if string.sub(ref, -#suffix) == suffix then dropped = dropped + 1 else keep[#keep + 1] = ref end
  end
  if dropped == 0 then return end
  local ttl = redis.call('PTTL', key)
  redis.call('DEL', key)
  for i = 1, #keep, 1000 do
    redis.call('RPUSH', key, unpack(keep, i, math.min(i + 999, #keep)))
  end
  if #keep > 0 and ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end

local removed = 0
local ids = redis.call('LRANGE', tenants_key, 0, n - 1)
for _, task_id in ipairs(ids) do
  local task_key = task_prefix .. task_id
  local tenant_id = redis.call('HGET', task_key, 'tenantId')
  if tenant_id then
    drop_refs(tenant_id)
    if redis.call('GET', tenant_prefix .. tenant_id) == task_id then
      redis.call('RPUSH', kept_key, task_id)
    else
      redis.call('UNLINK', task_key)
      redis.call('ZREM', KEYS[6], task_id)
      removed = removed + 1
    end
  end
end
redis.call('LTRIM', tenants_key, #ids, -1)
if redis.call('LLEN', tenants_key) > 0 then return {'MORE', removed, 0} end

local waves = tonumber(redis.call('HGET', plan_key, 'waves') or '0') or 0
for w = 0, waves - 1 do redis.call('UNLINK', wave_prefix .. w) end
redis.call('UNLINK', KEYS[5], KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15])
for i = 8, 10 do redis.call('ZREM', KEYS[i], plan_id) end
local kept = redis.call('LLEN', kept_key)
if kept == 0 then
  redis.call('UNLINK', plan_key, tenants_key)
  redis.call('ZREM', KEYS[7], plan_id)
  return {'DONE', removed, 0}
end
redis.call('RENAME', kept_key, tenants_key)
redis.call('HDEL', plan_key, 'archiving')
redis.call('HSET', plan_key, 'keptCheckedAt', redis.call('HGET', plan_key, 'archivedAt'))
return {'KEPT', removed, kept}
