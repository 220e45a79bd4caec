"""A failover of the state Redis, noticed and repaired without an operator.

Redis replicates asynchronously: when Sentinel promotes a replica, the writes the old master
acknowledged in its last few hundred milliseconds may be missing on the new one. Replication
is one ordered stream, so what the new master holds is a consistent *earlier* state of the
old one: some stage ends, checkpoints, completions and leases are rolled back together,
while the world (the target hashes, the broadcasts, the broker's messages) went further.

The guarantee (docs/operators.md, "High availability"):

- the new master is noticed by the first worker whose heartbeat sees another server
  (`run_id` of `INFO server` differs from `deployer:redis-run-id`; GETSET, so exactly one
  worker of all of them acts), within a heartbeat (1 s by default) of the switch;
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
from collections.abc import Callable

from deployer.reconciler import SweepResult
from deployer.state import keys, scripts
from deployer.state.record import Field
from deployer.state.store import Dispatch, Slot, Store, now_ms

log = logging.getLogger("deployer.failover")

#: Which server the state store was on when last seen (its `run_id`).
RUN_ID_KEY = "deployer:redis-run-id"
#: In-flight tasks claimed per script call.
BATCH = 200
#: Generations a failover skips: tokens issued in writes the new master never got are
#: never issued again (no task is re-driven this often within a failover's lost writes).
GEN_STEP = 1000
REASON = "redis failover"


class FailoverWatch:
    """`check()` at every heartbeat; re-drives in-flight tasks once per new master."""

    def __init__(
        self,
        store: Store,
        launch: Callable[[list[Slot]], list[Dispatch]],
        refill: Callable[[str], object] | None = None,
    ) -> None:
        self.store, self.launch, self.refill = store, launch, refill
        self._claim = scripts.load(store.r, "failover_claim")

    def server_id(self) -> str:
        return str(self.store.r.info("server").get("run_id", ""))

    def check(self) -> SweepResult | None:
        """Re-drive everything in flight when this worker is the first to see a new server
        (None otherwise: same server, or the very first look at this one)."""
        current = self.server_id()
        if not current:
            return None
        before = self.store.r.getset(RUN_ID_KEY, current)
        if before is None or before == current:
            return None
        log.warning(
            "state Redis is another server now (run_id %s…, was %s…): a failover or a "
            "restart; re-driving every task in flight from its stored checkpoint",
            current[:8],
            str(before)[:8],
        )
        result = self.sweep()
        log.warning("failover: %d task(s) re-driven from their checkpoints", len(result.redriven))
        return result

    def candidates(self) -> list[tuple[str, str]]:
        """(task id, token) of every watched task."""
        ids = [m[0] if isinstance(m, tuple) else m for m in self.store.r.zscan_iter(keys.INFLIGHT)]
        out: list[tuple[str, str]] = []
        for i in range(0, len(ids), BATCH):
            part = [str(task_id) for task_id in ids[i : i + BATCH]]
            tasks = self.store.get_tasks(part, (Field.TOKEN,))
            out += [(t, task.token) for t, task in zip(part, tasks, strict=True) if task.token]
        return out

    def sweep(self) -> SweepResult:
        s = self.store.settings
        found = self.candidates()
        total = SweepResult()
        for i in range(0, len(found), BATCH):
            raw = self._claim(
                keys=[keys.INFLIGHT, keys.EVENTS],
                args=[
                    now_ms(),
                    int(s.lease_ttl_seconds * 1000),
                    keys.task(""),
                    keys.LEASE.format(tenant_id=""),
                    s.events_maxlen,
                    GEN_STEP,
                    REASON,
                    *[x for pair in found[i : i + BATCH] for x in pair],
                ],
            )
            part = SweepResult.from_reply(raw)
            if part.redriven:
                self.launch(part.redriven)
            total.redriven += part.redriven
        return total
