"""Worker liveness: heartbeats in Redis, and re-driving the tasks of a worker that died.

A worker killed with `kill -9` (or a lost node) leaves its tenants RUNNING under a tenant
lease that outlives it by up to `DEPLOYER_LEASE_TTL_SECONDS` (60 s). So every worker's main
process refreshes `deployer:worker:{node}` (node = Celery hostname, main pid and a random
start id: deployer/worker_id.py) with a TTL of `DEPLOYER_WORKER_HEARTBEAT_SECONDS`, five
times per TTL, and every stage records `{node}/{pid}` on its task (`worker`). A node still
registered in `deployer:workers` whose key is gone died without a clean shutdown (which
deletes both): its RUNNING tasks are claimed by deployer/state/lua/orphan_claim.lua — a new token
fences the dead run — and re-sent from their checkpoint at once. Tasks with no heartbeat
information keep the lease TTL as their fallback.

The heartbeat has its own thread rather than the reconciler's: a reconciler sweep of
thousands of overdue tasks must never delay a beat (a late beat reads as a death and would
re-drive live work).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import redis

from deployer.errors import Code
from deployer.failover import FailoverWatch
from deployer.reconciler import SweepResult
from deployer.state import keys, scripts
from deployer.state.record import Cursor, Field
from deployer.state.store import Dispatch, Slot, Store, now_ms
from deployer.worker_id import node_of

log = logging.getLogger("deployer.liveness")

#: Beats per heartbeat TTL: a worker is declared dead after missing about this many.
BEATS_PER_TTL = 5
#: In-flight tasks read per round trip while looking for a dead worker's tasks.
SCAN_BATCH = 500


class Heartbeat:
    """One worker's heartbeat; `beat` also reports the registered workers that died.

    Each beat also publishes the stage messages the worker holds (`held`: task id -> where
    the message starts, `token:stage:step:attempt`; prefetched, waiting for a countdown or
    running) to `deployer:worker-holds:{node}`: a
    HealthCheck re-poll is often held by another worker than the one that ran the previous
    poll, and only the holder knows. Only messages held for two beats in a row are
    published, as changes: the many that come and go within a second cost nothing.
    """

    def __init__(
        self, r: redis.Redis, node: str, ttl_seconds: float, holds_ttl_seconds: float = 120.0
    ) -> None:
        self.r, self.node = r, node
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.holds_ttl_ms = max(self.ttl_ms * 2, int(holds_ttl_seconds * 1000))
        self._beat = scripts.load(r, "worker_beat")
        self._seen: dict[str, str] = {}
        self._published: dict[str, str] | None = None  # None: unknown, rewrite all

    def beat(self, held: dict[str, str] | None = None) -> list[str]:
        held = held or {}
        stable = {t: tok for t, tok in held.items() if self._seen.get(t) == tok}
        self._seen = held
        published = self._published
        replace = published is None
        before = published or {}
        adds = [(t, tok) for t, tok in stable.items() if replace or before.get(t) != tok]
        gone = [] if replace else [t for t in before if t not in stable]
        self._published = None  # until the script has run
        dead = self._beat(
            keys=[keys.worker(self.node), keys.WORKERS, keys.worker_holds(self.node)],
            args=[
                self.node, now_ms(), self.ttl_ms, keys.worker(""), self.holds_ttl_ms,
                "1" if replace else "0", len(adds), *[x for pair in adds for x in pair], *gone,
            ],
        )  # fmt: skip
        self._published = stable
        return [str(n) for n in dead]

    def stop(self) -> None:
        """Clean shutdown: the node leaves the registry, so nothing of it is re-driven (its
        unacknowledged messages go back to the queue and run elsewhere)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(
            keys.worker(self.node), keys.worker_holds(self.node), keys.worker_sends(self.node)
        )
        pipe.zrem(keys.WORKERS, self.node)
        pipe.execute()


class OrphanReconciler:
    """Finds the RUNNING tasks of dead nodes and re-drives them (`launch`, `refill` as in
    `Reconciler`)."""

    def __init__(
        self,
        store: Store,
        launch: Callable[[list[Slot]], list[Dispatch]],
        refill: Callable[[str], object],
    ) -> None:
        self.store, self.launch, self.refill = store, launch, refill
        self._claim = scripts.load(store.r, "orphan_claim")

    def candidates(self, dead: Iterable[str]) -> list[tuple[str, str, str, str]]:
        """(task id, token, worker, node) of watched tasks last run by a dead node, then of
        tasks whose current stage message a dead node held."""
        dead_nodes = set(dead)
        found: list[tuple[str, str, str, str]] = []
        batch: list[str] = []
        for task_id in self.store.r.zscan_iter(keys.INFLIGHT, count=SCAN_BATCH):
            batch.append(task_id[0] if isinstance(task_id, tuple) else task_id)
            if len(batch) >= SCAN_BATCH:
                found += self._matching(batch, dead_nodes)
                batch = []
        found += self._matching(batch, dead_nodes)
        taken = {c[0] for c in found}
        for node in sorted(dead_nodes):
            # What it held, and parked re-sends it popped but may not have sent
            # (deployer/parking.py): both are the task's next step if ahead of its cursor.
            raw = {
                **self.store.r.hgetall(keys.worker_sends(node)),
                **self.store.r.hgetall(keys.worker_holds(node)),
            }
            held = {str(t): str(tok) for t, tok in raw.items()}
            found += [c for c in self._held(held, node) if c[0] not in taken]
        return found

    def _held(self, held: dict[str, str], node: str) -> list[tuple[str, str, str, str]]:
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
                out.append((task_id, task.token, task.worker, node))
        return out

    def _matching(self, ids: list[str], dead: set[str]) -> list[tuple[str, str, str, str]]:
        out = []
        for task_id, task in zip(ids, self.store.get_tasks(ids, (Field.TOKEN, Field.WORKER)),
                                 strict=True):  # fmt: skip
            node = node_of(task.worker)
            if task.token and node in dead:
                out.append((task_id, task.token, task.worker, node))
        return out

    def claim(self, found: list[tuple[str, str, str, str]]) -> SweepResult:
        s = self.store.settings
        raw = self._claim(
            keys=[keys.INFLIGHT, keys.EVENTS],
            args=[
                now_ms(),
                int(s.lease_ttl_seconds * 1000),
                s.max_redeliveries,
                keys.TASK.format(task_id=""),
                keys.LEASE.format(tenant_id=""),
                keys.PLAN.format(plan_id=""),
                keys.worker(""),
                s.events_maxlen,
                Code.REDELIVERY_LIMIT_REACHED,
                *[part for candidate in found for part in candidate],
            ],
        )
        return SweepResult.from_reply(raw)

    def sweep(self, dead: list[str]) -> SweepResult:
        """Re-drive what the dead nodes ran; forget a node once none of its tasks is left."""
        found = self.candidates(dead)
        total = SweepResult()
        for i in range(0, len(found), SCAN_BATCH):
            part = self.claim(found[i : i + SCAN_BATCH])
            sent = self.launch(part.redriven) if part.redriven else []
            for d in sent:
                log.warning(
                    "re-driving task %s (tenant %s) from stage %d with token %s: worker lost",
                    d.task_id,
                    d.context.tenant_id,
                    d.context.stage_index,
                    d.token,
                )
            for task_id, plan_id in part.failed:
                log.error("task %s FAILED: worker lost more than the redelivery cap", task_id)
                self.refill(plan_id)
            total.redriven += part.redriven
            total.failed += part.failed
        if not found:
            # A full pass found nothing of them: they are forgotten (a node that comes back
            # registers itself again with its next beat).
            self.store.r.zrem(keys.WORKERS, *dead)
            self.store.r.delete(
                *[keys.worker_holds(node) for node in dead],
                *[keys.worker_sends(node) for node in dead],
            )
        return total


def _position(cursor: Cursor | None) -> tuple[str, tuple[int, ...]]:
    """(token, (stage, step, attempt)); ('', ()) if unreadable."""
    return (cursor.token, cursor.at) if cursor else ("", ())


class LivenessThread(threading.Thread):
    """Beats every TTL / BEATS_PER_TTL seconds; re-drives dead nodes' tasks when it sees any."""

    def __init__(
        self,
        heartbeat: Heartbeat,
        orphans: OrphanReconciler,
        ttl: float,
        held: Callable[[], dict[str, str]] = dict,
        failover: FailoverWatch | None = None,
    ) -> None:
        super().__init__(name="deployer-liveness", daemon=True)
        self.heartbeat, self.orphans, self.held = heartbeat, orphans, held
        #: Looks at every beat whether the state Redis is another server (deployer/failover.py).
        self.failover = failover
        self.interval = ttl / BEATS_PER_TTL
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self._check_failover()
                dead = self.heartbeat.beat(self.held())
                if dead:
                    self.orphans.sweep(dead)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("liveness: state store unavailable (%s); next beat retries", exc)
            except Exception:  # the heartbeat must outlive any one bad sweep
                log.exception("liveness sweep failed; next beat retries")
            if self.stopped.wait(self.interval):
                return

    def _check_failover(self) -> None:
        """The failover watch, on its own: whatever it meets, the beat that follows happens
        (a missed beat reads as this worker's death)."""
        if self.failover is None:
            return
        try:
            self.failover.check()
        except redis.exceptions.NoPermissionError as exc:
            log.warning("failover detection off: this Redis user may not run INFO (%s)", exc)
            self.failover = None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("liveness: failover check deferred (%s)", exc)
        except Exception:
            log.exception("failover check failed; the next beat retries")

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout)
        try:
            self.heartbeat.stop()
        except redis.RedisError as exc:
            log.warning("liveness: heartbeat not removed (%s); it expires by itself", exc)
