"""deployer's state in Redis: the only package that names a key or runs a script.

Plans, tasks, waves, events, workers (heartbeats, holds, claims) and parked tasks live in
Redis under `deployer:*` (keys.py), changed by the Lua scripts in lua/ (loaded and their
replies typed by scripts.py). Everything outside this package reads and changes that state
through the records and methods here — `Store`, `TaskRecord`, `PlanRecord` and the readers
beside them — so a layout change is one package's change, and a rule written both in Python
and in Lua has its parity test next to both.
"""
