"""Worker liveness: heartbeats in Redis, and re-driving the tasks of a worker that died.

A worker killed with `kill -9` (or a lost node) leaves its tenants RUNNING under a tenant
lease that outlives it by up to `DEPLOYER_LEASE_TTL_SECONDS` (60 s). So every worker's main
process refreshes `deployer:worker:{node}` (node = Celery hostname, main pid and a random
start id: deployer/worker_id.py) with a TTL of `DEPLOYER_WORKER_HEARTBEAT_SECONDS`, five
times per TTL, and every stage records `{node}/{pid}` on its task (`worker`). A node still
registered in `deployer:workers` whose key is gone died without a clean shutdown (which
deletes both): its RUNNING tasks are claimed (deployer/state/lua/orphan_claim.lua) — a new
token fences the dead run — and re-sent from their checkpoint at once (deployer/redrive.py
`OrphanReconciler`). Tasks with no heartbeat information keep the lease TTL as their fallback.

The heartbeat is a `runs_long` duty of the maintenance loop (deployer/maintenance.py): it has
a thread of its own, so a reconciler sweep of thousands of overdue tasks or a retention pass
never delays a beat (a late beat reads as a death and would re-drive live work).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from deployer.failover import FailoverWatch
from deployer.redrive import OrphanReconciler
from deployer.state.store import now_ms
from deployer.state.workers import Registry

log = logging.getLogger("deployer.liveness")

#: Beats per heartbeat TTL: a worker is declared dead after missing about this many.
BEATS_PER_TTL = 5


class Heartbeat:
    """One worker's heartbeat; `beat` also reports the registered workers that died.

    Each beat also publishes the stage messages the worker holds (`held`: task id -> where
    the message starts, `token:stage:step:attempt`; prefetched, waiting for a countdown or
    running) to the worker's holds record: a HealthCheck re-poll is often held by another
    worker than the one that ran the previous poll, and only the holder knows. Only messages
    held for two beats in a row are published, as changes: the many that come and go within
    a second cost nothing.
    """

    def __init__(
        self, r: redis.Redis, node: str, ttl_seconds: float, holds_ttl_seconds: float = 120.0
    ) -> None:
        self.node = node
        self.registry = Registry(r)
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.holds_ttl_ms = max(self.ttl_ms * 2, int(holds_ttl_seconds * 1000))
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
        dead = self.registry.beat(
            self.node, now_ms(), self.ttl_ms, self.holds_ttl_ms, replace, adds, gone
        )
        self._published = stable
        return dead

    def stop(self) -> None:
        """Clean shutdown: the node leaves the registry, so nothing of it is re-driven (its
        unacknowledged messages go back to the queue and run elsewhere)."""
        self.registry.leave(self.node)


class Liveness:
    """The liveness duty, every TTL / BEATS_PER_TTL seconds: the failover watch, the beat,
    and the re-drive of dead nodes' tasks when the beat names any."""

    def __init__(
        self,
        heartbeat: Heartbeat,
        orphans: OrphanReconciler,
        ttl: float,
        held: Callable[[], dict[str, str]] = dict,
        failover: FailoverWatch | None = None,
    ) -> None:
        self.heartbeat, self.orphans, self.held = heartbeat, orphans, held
        #: Looks at every beat whether the state Redis is another server (deployer/failover.py).
        self.failover = failover
        self.interval = ttl / BEATS_PER_TTL

    def tick(self) -> None:
        self._check_failover()
        dead = self.heartbeat.beat(self.held())
        if dead:
            self.orphans.sweep(dead)

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

    def stop(self) -> None:
        """Remove this worker's heartbeat (a clean stop is no death)."""
        try:
            self.heartbeat.stop()
        except redis.RedisError as exc:
            log.warning("liveness: heartbeat not removed (%s); it expires by itself", exc)
