"""What retention (deployer/retention.py) reads and changes in Redis, and nothing else does.

Finding due plans: the plans index `deployer:plans` (plan id -> created ms), each
candidate's plan hash fields and whether a timer, a plan command's job or an approval is
pending for it (a pipeline per page). Copying one: its plan hash, its event stream and its
tenant list (the task hashes are `Store.get_whole_tasks`'). Then, under the plan's
archiving lock (`deployer:plan:{P}:archiving`, a token with a TTL): lua/archive_mark.lua
marks it archived if it is still what was copied (`MarkVerdict`), and lua/archive_drop.lua
removes it a slice of tasks per call (`DropSlice`). A pass's outcome is counted in
`deployer:stats` (the exporter's deployer_retention_*).

When a plan is due, what its archive rows hold and when a pass stops is retention's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from deployer.errors import ScriptReplyError
from deployer.models import TaskStatus
from deployer.state import keys, scripts
from deployer.state.plans import PlanField, PlanRecord, count_field

#: `deployer:stats` fields (deployer/metrics.py exports them as deployer_retention_*).
STAT_ARCHIVED = "ret|archived"
STAT_TASKS = "ret|tasks"
STAT_FAILURES = "retfail"
STAT_LAST_SUCCESS = "retok|ms"
STAT_STREAK = "retok|streak"


class MarkVerdict(StrEnum):
    """What lua/archive_mark.lua did with a plan whose archive copy is committed."""

    #: Marked archived: it may be removed now.
    OK = "OK"
    #: This worker's archiving lock is gone (lapsed, another worker has the plan).
    LOCK = "LOCK"
    GONE = "GONE"
    #: Not finished, or something is in progress for it (job, timer, approval, rollback).
    LIVE = "LIVE"
    #: The plan hash is not what was copied.
    CHANGED = "CHANGED"


class DropVerdict(StrEnum):
    """What one call of lua/archive_drop.lua did."""

    #: A slice removed; tasks are left: call again.
    MORE = "MORE"
    #: The plan is gone from Redis.
    DONE = "DONE"
    #: Gone but for its tasks that are their tenants' newest (and a small plan hash).
    KEPT = "KEPT"
    LOCK = "LOCK"
    #: The plan is not marked archived: nothing removed.
    NOT_MARKED = "NOT_MARKED"


@dataclass(frozen=True)
class DropSlice:
    """One slice of a plan's removal: the verdict, task hashes removed by this slice, and
    (DONE/KEPT) how many tasks the plan keeps live in all."""

    verdict: DropVerdict
    removed: int
    kept: int

    @classmethod
    def from_reply(cls, raw: Sequence[Any]) -> DropSlice:
        """`{verdict, removed, kept}`."""
        if len(raw) != 3:
            raise ScriptReplyError(f"archive_drop.lua answered {raw!r}: not a slice")
        return cls(scripts.verdict(DropVerdict, raw[0], "archive_drop"), int(raw[1]), int(raw[2]))


@dataclass(frozen=True)
class DueCandidate:
    """A plan old enough to be due, as read to decide whether it is."""

    plan_id: str
    #: The fields asked for that its plan hash holds; None: the plan is gone.
    plan: PlanRecord | None
    #: A wave timer, a plan command's job or an approval is pending for it.
    busy: bool


def plan_digest(plan: Mapping[str, str]) -> str:
    """The plan hash's digest as lua/archive_mark.lua computes it (fields in `plan`'s order,
    which the mark is given): a plan changed in any field after its copy was read is not
    marked, nor removed."""
    flat = b"".join(f"{k}\0{v}\0".encode() for k, v in plan.items())
    return hashlib.sha1(flat, usedforsecurity=False).hexdigest()


class RetainedPlans:
    """Finished plans on their way from Redis to the archive (see the module docstring)."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self._mark = scripts.load(r, "archive_mark")
        self._drop = scripts.load(r, "archive_drop")

    # ---- which plans are due -------------------------------------------------------------

    def newest_plan_ms(self) -> int:
        """When the newest plan was created (ms), 0 when there is none."""
        newest = self.r.zrevrange(keys.PLANS, 0, 0, withscores=True)
        return int(newest[0][1]) if newest else 0

    def created_before(self, cutoff_ms: int) -> list[str]:
        """Plans created at or before `cutoff_ms`, oldest first."""
        return [str(p) for p in self.r.zrangebyscore(keys.PLANS, "-inf", cutoff_ms)]

    def candidates(
        self, plan_ids: Sequence[str], fields: Sequence[PlanField], counted: Sequence[TaskStatus]
    ) -> list[DueCandidate]:
        """`fields` and the task counters of the `counted` statuses of each plan's hash, and
        whether it is busy: one pipelined round trip."""
        names = [*(f.value for f in fields), *(count_field(s) for s in counted)]
        pipe = self.r.pipeline(transaction=False)
        for plan_id in plan_ids:
            pipe.hmget(keys.plan(plan_id), names)
            pipe.zscore(keys.PLAN_TIMERS, plan_id)
            pipe.zscore(keys.PLAN_JOBS, plan_id)
            pipe.zscore(keys.AWAITING_APPROVAL, plan_id)
        replies = pipe.execute()
        out = []
        for i, plan_id in enumerate(plan_ids):
            values, timer, job, approval = replies[4 * i : 4 * i + 4]
            found = {k: v for k, v in zip(names, values, strict=True) if v is not None}
            busy = timer is not None or job is not None or approval is not None
            out.append(DueCandidate(plan_id, PlanRecord.from_hash(found) if found else None, busy))
        return out

    # ---- what is copied ------------------------------------------------------------------

    def plan(self, plan_id: str) -> PlanRecord | None:
        """The whole plan, its `raw` hash in Redis's field order (the mark's digest follows
        it); None when it is gone."""
        raw: dict[str, str] = self.r.hgetall(keys.plan(plan_id))  # type: ignore[assignment]
        return PlanRecord.from_hash(raw) if raw else None

    def plan_events(
        self, plan_id: str, after: str | None, count: int
    ) -> list[tuple[str, dict[str, str]]]:
        """Up to `count` events of the plan's stream after entry `after` (None: from the
        first), as (entry id, fields)."""
        start = "-" if after is None else f"({after}"
        return self.r.xrange(keys.events_plan(plan_id), min=start, count=count)  # type: ignore[return-value]

    def task_ids(self, plan_id: str, start: int, count: int) -> list[str]:
        """Up to `count` of the plan's task ids from position `start` (submission order)."""
        return self.r.lrange(keys.plan_tenants(plan_id), start, start + count - 1)  # type: ignore[return-value]

    # ---- the archiving lock ----------------------------------------------------------------

    def lock(self, plan_id: str, token: str, ttl_ms: int) -> bool:
        """Take the plan's archiving lock for `ttl_ms`; False when another worker has it."""
        return bool(self.r.set(keys.plan_archiving(plan_id), token, nx=True, px=ttl_ms))

    def renew(self, plan_id: str, token: str, ttl_ms: int) -> None:
        """Give the lock `ttl_ms` more, if it is still `token`'s."""
        lock = keys.plan_archiving(plan_id)
        if self.r.get(lock) == token:
            self.r.pexpire(lock, ttl_ms)

    def unlock(self, plan_id: str, token: str) -> None:
        """Release the lock if it is still `token`'s (a lapsed one may be another's now)."""
        lock = keys.plan_archiving(plan_id)
        pipe = self.r.pipeline(transaction=True)
        try:
            pipe.watch(lock)
            if pipe.get(lock) == token:
                pipe.multi()
                pipe.delete(lock)
                pipe.execute()
        except redis.WatchError:
            pass
        finally:
            pipe.reset()

    # ---- mark, then remove -----------------------------------------------------------------

    def mark(self, plan_id: str, token: str, plan: PlanRecord, now_ms: int) -> MarkVerdict:
        """Mark the plan archived (lua/archive_mark.lua) if it is still `plan`, the hash as
        copied (`plan.raw`), and nothing keeps it live."""
        copied = plan.raw
        raw = self._mark(
            keys=[
                keys.plan(plan_id),
                keys.plan_archiving(plan_id),
                keys.PLAN_TIMERS,
                keys.PLAN_JOBS,
                keys.AWAITING_APPROVAL,
                keys.plan_claim(plan_id),
                keys.plan_job(plan_id),
            ],
            args=[
                token,
                plan_id,
                copied.get(PlanField.UPDATED_AT.value, ""),
                now_ms,
                plan_digest(copied),
                *copied,
            ],
        )
        return scripts.verdict(MarkVerdict, raw, "archive_mark")

    def drop(self, *, plan_id: str, token: str, count: int) -> DropSlice:
        """Remove one slice of a marked plan: at most `count` of its tasks
        (lua/archive_drop.lua), then, with the last slice, the rest of its keys."""
        raw = self._drop(
            keys=[keys.plan(plan_id), keys.plan_tenants(plan_id), keys.plan_kept(plan_id),
                  keys.plan_archiving(plan_id), keys.events_plan(plan_id), keys.INFLIGHT,
                  keys.PLANS, keys.PLAN_TIMERS, keys.PLAN_JOBS, keys.AWAITING_APPROVAL,
                  keys.plan_queue(plan_id), keys.plan_job(plan_id),
                  keys.plan_job_order(plan_id), keys.plan_job_lock(plan_id),
                  keys.plan_claim(plan_id)],
            args=[token, plan_id, count, keys.task(""), keys.tenant(""), keys.events_tenant(""),
                  keys.plan_wave(plan_id, "")],
        )  # fmt: skip
        return DropSlice.from_reply(raw)

    # ---- what an operator sees -------------------------------------------------------------

    def count_success(self, plans: int, tasks: int, now_ms: int) -> int:
        """Count a pass's archived plans and tasks, stamp its success and end the failure
        streak: one round trip. Returns the streak it ended (0: none)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hincrby(keys.STATS, STAT_ARCHIVED, plans)
        pipe.hincrby(keys.STATS, STAT_TASKS, tasks)
        pipe.hset(keys.STATS, STAT_LAST_SUCCESS, now_ms)
        pipe.hget(keys.STATS, STAT_STREAK)
        pipe.hset(keys.STATS, STAT_STREAK, 0)
        streak = pipe.execute()[3]
        try:
            return int(streak)
        except (TypeError, ValueError):
            return 0

    def count_failure(self, reason: str) -> int:
        """Count a failed pass under `reason`: one round trip. Returns the failure streak
        (across workers) it makes."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hincrby(keys.STATS, f"{STAT_FAILURES}|{reason}", 1)
        pipe.hincrby(keys.STATS, STAT_STREAK, 1)
        return int(pipe.execute()[1])
