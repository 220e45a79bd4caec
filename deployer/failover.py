"""A failover of the state Redis, noticed and repaired without an operator.

Redis replicates asynchronously: when Sentinel promotes a replica, the writes the old master
acknowledged in its last few hundred milliseconds may be missing on the new one. Replication
is one ordered stream, so what the new master holds is a consistent *earlier* state of the
old one: some stage ends, checkpoints, completions and leases are rolled back together,
while the world (the target hashes, the broadcasts, the broker's messages) went further.

The guarantee (docs/operators.md, "High availability"):

- the new master is noticed by the first worker whose heartbeat sees another server
  (`run_id` of `INFO server` differs from the one recorded in the state Redis; GETSET, so
  exactly one worker of all of them acts), within a heartbeat (1 s by default) of the switch;
- that worker re-drives every live task (PENDING, RUNNING, ROLLING_BACK) from the
  checkpoint the new master holds, under a new token (lua/failover_claim.lua): whatever ran
  meanwhile is fenced off, a completion that was lost is done again (the same version is
  written again: stages are idempotent), a message that was lost is sent again. No tenant
  ends at a version its plan did not ask for, and no plan waits on a lost message;
- a plan's creation waits for `DEPLOYER_REDIS_WAIT_REPLICAS` replicas (WAIT) before it is
  acknowledged, so a plan reported created survives the failover (deployer/state/store.py).

The same holds for a lone Redis restarted from an older snapshot: a new `run_id` is a new
server, whatever the cause.
"""

from __future__ import annotations

import logging

from deployer.redrive import FailoverRedrive
from deployer.state.workers import Claimed, ServerRecord

log = logging.getLogger("deployer.failover")


class FailoverWatch:
    """`check()` at every heartbeat; re-drives in-flight tasks once per new master with
    `redrive` (deployer/redrive.py `FailoverRedrive`, whose store it watches)."""

    def __init__(self, redrive: FailoverRedrive) -> None:
        self.server = ServerRecord(redrive.store.r)
        self.redrive = redrive

    def server_id(self) -> str:
        return self.server.current()

    def check(self) -> Claimed | None:
        """Re-drive everything in flight when this worker is the first to see a new server
        (None otherwise: same server, or the very first look at this one)."""
        current = self.server_id()
        if not current:
            return None
        before = self.server.swap(current)
        if before is None or before == current:
            return None
        log.warning(
            "state Redis is another server now (run_id %s…, was %s…): a failover or a "
            "restart; re-driving every task in flight from its stored checkpoint",
            current[:8],
            before[:8],
        )
        result = self.sweep()
        log.warning("failover: %d task(s) re-driven from their checkpoints", len(result.redriven))
        return result

    def sweep(self) -> Claimed:
        return self.redrive.sweep()
