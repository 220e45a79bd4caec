"""Workers' state: heartbeats, the registry of workers expected alive, the stage messages each
holds, the claims that take a lost run's tasks back, and the server a worker last saw.

Three claims hand tasks back for re-driving (deployer/redrive.py sends them): a lease that
expired (lua/reconcile_claim.lua), a worker whose heartbeat is gone (lua/orphan_claim.lua),
and a state Redis that is another server now (lua/failover_claim.lua). All three answer the
same records, decoded here into `Claimed`: the re-driven tasks as `Slot`s (what a plan's
fill hands out too, so one launcher sends both) and the tasks that failed past the cap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis

from deployer.errors import Code, ScriptReplyError
from deployer.settings import Settings
from deployer.state import keys, scripts
from deployer.state.store import Slot

#: A claim record: its kind, then a `Slot`'s fields in their order (see the claim scripts).
_SLOT_FIELDS = len(dataclasses.fields(Slot))
_RECORD = 1 + _SLOT_FIELDS


@dataclass
class Claimed:
    """What a claim script took: tasks to re-send from their checkpoint under the new token
    they carry, and (task id, plan id) of those that failed instead (redelivery cap reached;
    their plan's freed slot wants refilling)."""

    redriven: list[Slot] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def from_reply(cls, raw: Sequence[Any]) -> Claimed:
        """Records of `1 + len(Slot)` values: 'R' and a Slot (run_json and ctx_json '' when
        the run was never stored), or 'F', the task and plan ids and blanks."""
        if len(raw) % _RECORD:
            raise ScriptReplyError(
                f"claim script answered {len(raw)} values: not records of {_RECORD}"
            )
        result = cls()
        for start in range(0, len(raw), _RECORD):
            kind, values = raw[start], [str(v) for v in raw[start + 1 : start + _RECORD]]
            if kind == "R":
                result.redriven.append(Slot(*values))
            elif kind == "F":
                result.failed.append((values[0], values[1]))
            else:
                raise ScriptReplyError(f"claim script answered record kind {kind!r}")
        return result

    def __iadd__(self, other: Claimed) -> Claimed:
        self.redriven += other.redriven
        self.failed += other.failed
        return self


class Orphan(NamedTuple):
    """A task a dead node may have left: its token and recorded worker as seen, and the node."""

    task_id: str
    token: str
    worker: str
    node: str


class Registry:
    """The heartbeats (`deployer:worker:{node}`, with a TTL), the registry of workers expected
    alive (`deployer:workers`) and what each worker holds (`deployer:worker-holds:{node}`) or
    is sending from the parking lot (`deployer:worker-sends:{node}`)."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self._beat = scripts.load(r, "worker_beat")

    def beat(
        self,
        node: str,
        now: int,
        ttl_ms: int,
        holds_ttl_ms: int,
        replace: bool,
        adds: Sequence[tuple[str, str]],
        gone: Sequence[str],
    ) -> list[str]:
        """Refresh `node`'s heartbeat and its published holds (all of them when `replace`,
        else `adds` set and `gone` removed), in one script; the registered nodes whose
        heartbeat is gone (none when this node's own had lapsed: lua/worker_beat.lua)."""
        dead = self._beat(
            keys=[keys.worker(node), keys.WORKERS, keys.worker_holds(node)],
            args=[
                node, now, ttl_ms, keys.worker(""), holds_ttl_ms, "1" if replace else "0",
                len(adds), *[x for pair in adds for x in pair], *gone,
            ],
        )  # fmt: skip
        return [str(n) for n in dead]

    def leave(self, node: str) -> None:
        """A clean shutdown: the node, its heartbeat and its records go, in one transaction."""
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(keys.worker(node), keys.worker_holds(node), keys.worker_sends(node))
        pipe.zrem(keys.WORKERS, node)
        pipe.execute()

    def forget(self, nodes: Sequence[str]) -> None:
        """Dead nodes none of whose tasks is left: out of the registry, their records gone."""
        if not nodes:
            return
        self.r.zrem(keys.WORKERS, *nodes)
        self.r.delete(
            *[keys.worker_holds(node) for node in nodes],
            *[keys.worker_sends(node) for node in nodes],
        )

    def held_by(self, node: str) -> dict[str, str]:
        """Task id -> position (`token:stage:step:attempt`) of the stage messages `node`
        held, and of the parked re-sends it popped but may not have sent (a hold wins)."""
        raw = {**self.r.hgetall(keys.worker_sends(node)), **self.r.hgetall(keys.worker_holds(node))}
        return {str(t): str(pos) for t, pos in raw.items()}

    def registered(self) -> list[str]:
        """The nodes expected alive (registered, not cleanly stopped)."""
        return [str(n) for n in self.r.zrange(keys.WORKERS, 0, -1)]


class Claims:
    """The three claims that take tasks from a lost run (each one atomic script, so with many
    workers each task is claimed exactly once), and the watch list they read."""

    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.r, self.settings = r, settings
        self._lease = scripts.load(r, "reconcile_claim")
        self._orphan = scripts.load(r, "orphan_claim")
        self._failover = scripts.load(r, "failover_claim")

    def inflight(self, batch: int) -> Iterator[list[str]]:
        """The ids of every watched task (`deployer:inflight`), `batch` at a time."""
        part: list[str] = []
        for member in self.r.zscan_iter(keys.INFLIGHT, count=batch):
            part.append(str(member[0] if isinstance(member, tuple) else member))
            if len(part) >= batch:
                yield part
                part = []
        if part:
            yield part

    def _lease_ms(self) -> int:
        return int(self.settings.lease_ttl_seconds * 1000)

    def lease_expired(self, now: int, batch: int) -> Claimed:
        """Up to `batch` tasks whose lease deadline passed and whose run no longer holds the
        tenant lease (a PENDING one after its grace, doubled per re-drive up to 8x)."""
        s = self.settings
        raw = self._lease(
            keys=[keys.INFLIGHT, keys.EVENTS],
            args=[
                now, self._lease_ms(), s.max_redeliveries, keys.task(""), keys.lease(""),
                keys.plan(""), batch, s.events_maxlen, int(s.pending_grace_seconds * 1000),
                Code.REDELIVERY_LIMIT_REACHED,
            ],
        )  # fmt: skip
        return Claimed.from_reply(raw)

    def worker_lost(self, now: int, found: Sequence[Orphan]) -> Claimed:
        """The `found` tasks still as seen (token, worker) and whose node is still silent."""
        s = self.settings
        raw = self._orphan(
            keys=[keys.INFLIGHT, keys.EVENTS],
            args=[
                now, self._lease_ms(), s.max_redeliveries, keys.task(""), keys.lease(""),
                keys.plan(""), keys.worker(""), s.events_maxlen, Code.REDELIVERY_LIMIT_REACHED,
                *[part for orphan in found for part in orphan],
            ],
        )  # fmt: skip
        return Claimed.from_reply(raw)

    def server_changed(
        self, now: int, found: Sequence[tuple[str, str]], gen_step: int, reason: str
    ) -> Claimed:
        """The live ones of `found` (task id, token as seen), under tokens `gen_step`
        generations on; not counted as redeliveries."""
        s = self.settings
        raw = self._failover(
            keys=[keys.INFLIGHT, keys.EVENTS],
            args=[
                now, self._lease_ms(), keys.task(""), keys.lease(""), s.events_maxlen,
                gen_step, reason, *[x for pair in found for x in pair],
            ],
        )  # fmt: skip
        return Claimed.from_reply(raw)


class ServerRecord:
    """Which server the state Redis was on when a worker last looked (`deployer:redis-run-id`)."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r

    def current(self) -> str:
        """The `run_id` of the server answering now ('' if it gives none)."""
        return str(self.r.info("server").get("run_id", ""))

    def swap(self, run_id: str) -> str | None:
        """Record `run_id`; the one recorded before (GETSET: of all workers seeing a new
        server, exactly one gets the old id back)."""
        before = self.r.getset(keys.REDIS_RUN_ID, run_id)
        return None if before is None else str(before)


def plan_jobs_pending(r: redis.Redis) -> bool:
    """Whether a plan command has slices left (`deployer:plan-jobs`)."""
    return bool(r.zcard(keys.PLAN_JOBS))


#: `deployer:stats` field of a maintenance duty's failed passes (deployer/maintenance.py),
#: exported as `deployer_maintenance_failures_total{duty}`.
STAT_DUTY_FAILED = "mf|{duty}"


def count_duty_failure(r: redis.Redis, duty: str) -> None:
    """One failed pass of the maintenance duty `duty`, counted where every worker's are."""
    r.hincrby(keys.STATS, STAT_DUTY_FAILED.format(duty=duty), 1)
