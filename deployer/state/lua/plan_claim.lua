-- Claim the creation of a plan too big for one script (deployer/state/store.py create_plan).
-- Its tasks are then written in slices while the plan stays invisible, and plan_finish
-- makes it visible at once; the claim makes one creator of a planId write at a time.
-- KEYS: plan, claim, plan tenants list, plan queue
-- ARGV: token, ttl_ms
-- Returns 0: the plan exists; -1: another creator holds the claim; 1: claimed (the lists
-- a creator that died mid-way left are cleared; its task hashes are overwritten).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
redis.call('DEL', KEYS[3], KEYS[4])
return 1
