-- Record one event decided in Python (a refused command, a plan command's summary) through
-- the same emit as the scripts, so the plan and tenant histories get it too.
-- KEYS: events   ARGV: events_maxlen, field, value, ...
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
return emit(KEYS[1], ARGV[1], fields)
