"""Re-driving: a task whose run was lost is claimed and re-sent from its checkpoint.

A run is lost three ways, each noticed by its own watch and taken back by its own claim
(deployer/state/workers.py `Claims`, one atomic script each, so with many workers a task is
claimed exactly once):

- **its lease expired** (`Reconciler`, every worker on a timer): a `kill -9`, a lost message
  or a stalled broker left it RUNNING with nobody renewing the tenant lease, or a PENDING
  task never started (after the pending grace, doubled with each re-drive up to 8x, so a
  backlogged queue is not lengthened by re-drives);
- **its worker died** (`OrphanReconciler`, at once when a heartbeat sees a registered node's
  heartbeat gone: deployer/liveness.py): the tasks the node ran and the stage messages it
  held;
- **the state Redis is another server** (`FailoverRedrive`, once per new server:
  deployer/failover.py): every live task, from the checkpoint the new server holds.

Every claim issues a new token (the lost run's stragglers are fenced off as stale) and
frees the tenant lease the lost run held. The first two count a redelivery, capped by
`max_redeliveries` (past it the task FAILS with `REDELIVERY_LIMIT_REACHED` and its plan's
slot is refilled); a failover is no redelivery (the task did nothing wrong): its tokens skip
`GEN_STEP` generations instead, past any token a lost write handed out. The scripts write
the `TASK_REDRIVEN` / `TASK_FAILED` events and count them for the metrics, each with its
cause. Whatever the cause, `Redriver.resend` is the one way a claimed task goes back out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from enum import StrEnum

import redis

from deployer.state.record import Cursor, Field
from deployer.state.store import Dispatch, Slot, Store, now_ms
from deployer.state.workers import Claimed, Claims, Orphan, Registry
from deployer.timers import advance_due
from deployer.worker_id import node_of

log = logging.getLogger("deployer.redrive")

#: Tasks claimed per round trip; a lease sweep repeats while batches come back full.
BATCH = 200
#: Round trips per lease sweep at most (bounded loop): 200 * 50 = 10,000 tasks per tick.
MAX_BATCHES = 50
#: In-flight tasks read per round trip while looking for a dead worker's tasks.
SCAN_BATCH = 500
#: Generations a failover skips: tokens issued in writes the new master never got are
#: never issued again (no task is re-driven this often within a failover's lost writes).
GEN_STEP = 1000
#: The reason a failover's TASK_REDRIVEN events carry.
FAILOVER_REASON = "redis failover"


class Cause(StrEnum):
    """Why a run was taken back, as the logs say it."""

    LEASE_EXPIRED = "its lease expired"
    WORKER_LOST = "worker lost"
    FAILOVER = "redis failover"


class Redriver:
    """Sends claimed tasks back out: `launch` sends their chains from the checkpoint
    (`Planner.launch`, which also builds a run never stored and fails a task whose record
    is unreadable), `refill` fills the slot a failed task freed (`Planner.dispatch`)."""

    def __init__(
        self,
        store: Store,
        launch: Callable[[list[Slot]], list[Dispatch]],
        refill: Callable[[str], object] | None = None,
    ) -> None:
        self.store, self.launch, self.refill = store, launch, refill
        self.claims = Claims(store.r, store.settings)

    def resend(self, claimed: Claimed, cause: Cause) -> list[Dispatch]:
        """Re-send what a claim took back and refill the plans of the tasks that failed."""
        sent = self.launch(claimed.redriven) if claimed.redriven else []
        for d in sent:
            log.warning(
                "re-driving task %s (tenant %s) from stage %d with token %s: %s",
                d.task_id, d.context.tenant_id, d.context.stage_index, d.token, cause,
            )  # fmt: skip
        for task_id, plan_id in claimed.failed:
            log.error("task %s FAILED: %s more than the redelivery cap", task_id, cause)
            self._refill(plan_id)
        return sent

    def _refill(self, plan_id: str) -> None:
        """One plan that cannot be refilled never stops the re-drive of the others."""
        if self.refill is None:
            return
        try:
            self.refill(plan_id)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception:
            log.exception("re-drive: refilling plan %s failed; next sweep retries", plan_id)


class Reconciler(Redriver):
    """Re-drives tasks whose lease expired. `advance` (optional) also runs, at each sweep,
    the wave step of every plan whose due time passed; a worker leaves that to its plan
    timers (deployer/timers.py), which act when a time is due instead of at the next sweep."""

    def __init__(
        self,
        store: Store,
        launch: Callable[[list[Slot]], list[Dispatch]],
        refill: Callable[[str], object],
        advance: Callable[[str], object] | None = None,
    ) -> None:
        super().__init__(store, launch, refill)
        self.advance = advance

    def claim(self, now: int | None = None, batch: int = BATCH) -> Claimed:
        """One atomic claim of up to `batch` overdue tasks (no messages sent)."""
        return self.claims.lease_expired(now if now is not None else now_ms(), batch)

    def sweep(self, now: int | None = None) -> Claimed:
        """Claim every overdue task (bounded), re-send them, refill failed tasks' plans."""
        total = Claimed()
        for _ in range(MAX_BATCHES):
            part = self.claim(now)
            self.resend(part, Cause.LEASE_EXPIRED)
            total += part
            if len(part.redriven) + len(part.failed) < BATCH:
                break
        if self.advance is not None:
            self.advance_due(now)
        return total

    def advance_due(self, now: int | None = None) -> list[str]:
        """Run the wave step of every plan whose due time passed (durable waits: whichever
        worker wrote the due time, any live one acts on it): the plan timers' own loop
        (deployer/timers.py `advance_due`), here the backstop for a timer that was missed."""
        assert self.advance is not None
        failed = "wave step of plan %s failed; next tick retries"
        return advance_due(self.store, self.advance, now, logger=log, failed=failed)


class OrphanReconciler(Redriver):
    """Re-drives the RUNNING tasks of dead nodes and the stage messages they held."""

    def __init__(
        self,
        store: Store,
        launch: Callable[[list[Slot]], list[Dispatch]],
        refill: Callable[[str], object],
    ) -> None:
        super().__init__(store, launch, refill)
        self.registry = Registry(store.r)

    def candidates(self, dead: Iterable[str]) -> list[Orphan]:
        """Watched tasks last run by a dead node, then tasks whose current stage message a
        dead node held (or had popped from the parking lot: deployer/parking.py)."""
        dead_nodes = set(dead)
        found: list[Orphan] = []
        for batch in self.claims.inflight(SCAN_BATCH):
            found += self._matching(batch, dead_nodes)
        taken = {c.task_id for c in found}
        for node in sorted(dead_nodes):
            held = self.registry.held_by(node)
            found += [c for c in self._held(held, node) if c.task_id not in taken]
        return found

    def _held(self, held: dict[str, str], node: str) -> list[Orphan]:
        """Held messages that are the task's next step: same run (token) and a position
        after the task's cursor. One that already ran (its task moved on, perhaps to a live
        worker) is left alone."""
        ids = list(held)
        tasks = self.store.get_tasks(ids, (Field.TOKEN, Field.WORKER, Field.CURSOR))
        out = []
        for task_id, task in zip(ids, tasks, strict=True):
            held_token, held_at = _position(Cursor.parse(held[task_id]))
            cursor_token, cursor_at = _position(task.cursor)
            ahead = cursor_token != held_token or held_at > cursor_at
            if task.token and task.token == held_token and ahead:
                out.append(Orphan(task_id, task.token, task.worker, node))
        return out

    def _matching(self, ids: list[str], dead: set[str]) -> list[Orphan]:
        out = []
        for task_id, task in zip(ids, self.store.get_tasks(ids, (Field.TOKEN, Field.WORKER)),
                                 strict=True):  # fmt: skip
            node = node_of(task.worker)
            if task.token and node in dead:
                out.append(Orphan(task_id, task.token, task.worker, node))
        return out

    def claim(self, found: list[Orphan]) -> Claimed:
        return self.claims.worker_lost(now_ms(), found)

    def sweep(self, dead: list[str]) -> Claimed:
        """Re-drive what the dead nodes ran; forget a node once none of its tasks is left."""
        found = self.candidates(dead)
        total = Claimed()
        for i in range(0, len(found), SCAN_BATCH):
            part = self.claim(found[i : i + SCAN_BATCH])
            self.resend(part, Cause.WORKER_LOST)
            total += part
        if not found:
            # A full pass found nothing of them: they are forgotten (a node that comes back
            # registers itself again with its next beat).
            self.registry.forget(dead)
        return total


class FailoverRedrive(Redriver):
    """Re-drives every live task (PENDING, RUNNING, ROLLING_BACK) from the checkpoint the
    state Redis holds now, after it changed servers (deployer/failover.py decides when)."""

    def candidates(self) -> list[tuple[str, str]]:
        """(task id, token) of every watched task."""
        out: list[tuple[str, str]] = []
        for part in self.claims.inflight(BATCH):
            tasks = self.store.get_tasks(part, (Field.TOKEN,))
            out += [(t, task.token) for t, task in zip(part, tasks, strict=True) if task.token]
        return out

    def sweep(self) -> Claimed:
        found = self.candidates()
        total = Claimed()
        for i in range(0, len(found), BATCH):
            part = self.claims.server_changed(
                now_ms(), found[i : i + BATCH], GEN_STEP, FAILOVER_REASON
            )
            self.resend(part, Cause.FAILOVER)
            total += part
        return total


def _position(cursor: Cursor | None) -> tuple[str, tuple[int, ...]]:
    """(token, (stage, step, attempt)); ('', ()) if unreadable."""
    return (cursor.token, cursor.at) if cursor else ("", ())
