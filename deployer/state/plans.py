"""The plan hash (`deployer:plan:{planId}`, keys.PLAN) as one typed record, and the reads of
plans, their task lists and the tenants' latest tasks that the read models need.

Redis keeps a plan as a flat hash of strings: named fields (`PlanField`), a counter of tasks
per status (`c:{STATUS}`), each wave's fields (`w:{i}:{WaveField}` and its counters
`w:{i}:c:{STATUS}`, read as `WaveRecord`s) and metric counters (`m:*`). The Lua scripts in
deployer/state/lua write it under the same names (keep the two in step:
tests/unit/test_plan_record.py checks every `PlanField` is one the scripts use). Python
outside deployer/state reads a plan only as a `PlanRecord`, never by a field's string name.

Reading is lenient, as `TaskRecord`'s is: a read model must show a plan whose hash holds a
corrupt value, so an unreadable number reads as absent (None), absent text as "".

`Plans` answers each read in one round trip (a pipeline where a read needs two commands):
`deployer status` and the HTTP API read a plan on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

import redis
from redis.commands.core import Script

from deployer.models import TaskStatus, task_id_for
from deployer.state import keys, scripts
from deployer.state.store import Store
from deployer.state.targets import read_config


class PlanField(StrEnum):
    """Every named field of the plan hash, by its stored (camelCase) name."""

    PLAN_ID = "planId"
    STATUS = "status"  # public (docs/contracts.md): the plan's status
    MAX_CONCURRENCY = "maxConcurrency"
    TOTAL = "total"  # tasks in the plan
    INFLIGHT = "inflight"  # tasks holding a concurrency slot
    CREATED_AT = "createdAt"
    UPDATED_AT = "updatedAt"
    DIGEST = "digest"  # deployer.intake.plan_digest of the plan as submitted ('' before digests)
    CONTROL = "control"  # PAUSE / CANCEL while the plan is held
    CONTROL_BY = "controlBy"
    CONTROL_REASON = "controlReason"
    PENDING_ROLLBACK = "pendingRollback"  # '1': the failure budget's rollback is decided
    JOB = "job"  # the plan command working through the tasks in slices
    JOB_GEN = "jobGen"
    ARCHIVED_AT = "archivedAt"  # retention marked the plan (deployer/retention.py)
    ARCHIVING = "archiving"  # '1' while its tasks are being removed
    KEPT_CHECKED_AT = "keptCheckedAt"
    EVENTS_MAXLEN = "eventsMaxlen"
    # a plan with a strategy (deployer/waves.py)
    STRATEGY = "strategy"  # Strategy JSON
    WAVES = "waves"  # how many
    WAVE = "wave"  # the current wave's index
    WAVE_STATE = "waveState"
    BAKE_UNTIL = "bakeUntil"
    BAKE_MS = "bakeMs"
    APPROVAL = "approval"
    APPROVAL_WAIVED_BY = "approvalWaivedBy"
    GATE = "gate"
    PROMOTE_ALL = "promoteAll"  # '1': every remaining wave's bake is skipped
    STOP_REASON = "stopReason"
    WINDOW_OPENS_AT = "windowOpensAt"
    BUDGET_MAX = "budgetMax"
    BUDGET_SCOPE = "budgetScope"
    BUDGET_ON_EXCEED = "budgetOnExceed"
    BUDGET_FORGIVEN = "budgetForgiven"
    BUDGET_EXCEEDED_WAVE = "budgetExceededWave"
    BUDGET_EXCEEDED_USED = "budgetExceededUsed"
    BUDGET_EXCEEDED_MAX = "budgetExceededMax"
    BUDGET_EXCEEDED_AT = "budgetExceededAt"
    GATE_STATUS = "gateStatus"  # the gate's last refusal: HTTP status or error
    GATE_ANSWER = "gateAnswer"
    GATE_CHECKED_AT = "gateCheckedAt"
    GATE_NEXT_AT = "gateNextAt"
    GATE_REFUSALS = "gateRefusals"


class WaveField(StrEnum):
    """Each wave's fields in the plan hash, stored as `w:{index}:{name}` (`wave_field`)."""

    TENANTS = "n"  # how many tenants the wave holds (fixed at submit)
    BUDGET = "budget"  # its failure budget (a strategy with a per-wave budget)
    FORGIVEN = "forgiven"  # failures an operator's `budget --reset` forgave
    STARTED_AT = "startedAt"
    ENDED_AT = "endedAt"
    APPROVED_BY = "approvedBy"
    APPROVED_AT = "approvedAt"
    PROMOTED_BY = "promotedBy"
    PROMOTED_AT = "promotedAt"
    NO_BAKE = "noBake"  # '1': promoted, its bake skipped


class PlanCounter(StrEnum):
    """The plan hash's metric counters, stored as `m:{name}` (`counter_field`) by
    lua/stage_begin.lua; the exporter (deployer/metrics.py) shows them per plan."""

    LEASE_CONFLICTS = "leaseConflicts"  # stage starts refused: another run held the lease
    HEALTH_CHECK_ATTEMPTS = "healthCheckAttempts"  # HealthCheck polls after the first


def counter_field(name: PlanCounter) -> str:
    return f"m:{name.value}"


def count_field(status: TaskStatus) -> str:
    """The plan hash's counter of tasks in `status` (kept by the scripts with each change)."""
    return f"c:{status.value}"


def wave_field(index: int, name: WaveField) -> str:
    return f"w:{index}:{name.value}"


def wave_count_field(index: int, status: TaskStatus) -> str:
    """Wave `index`'s counter of tasks in `status`."""
    return f"w:{index}:c:{status.value}"


_STATUSES = frozenset(s.value for s in TaskStatus)


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _flag(text: str) -> bool:
    return text == "1"


@dataclass(frozen=True)
class PlanRecord:
    """One plan hash, or the part of it that was read (`Plans.fields`).

    Text fields are "" when absent; numbers and times (ms since the epoch) None when absent
    or unreadable; flags False unless '1'. `counts` holds the non-zero task counters by
    status, in `TaskStatus` order.
    """

    plan_id: str = ""
    status: str = ""
    max_concurrency: int | None = None
    total: int | None = None
    inflight: int | None = None
    created_at: int | None = None
    updated_at: int | None = None
    digest: str = ""
    control: str = ""
    control_by: str = ""
    control_reason: str = ""
    pending_rollback: bool = False
    job: str = ""
    job_gen: int | None = None
    archived_at: int | None = None
    archiving: bool = False
    kept_checked_at: int | None = None
    events_maxlen: int | None = None
    strategy: str = ""
    waves: int | None = None
    wave: int | None = None
    wave_state: str = ""
    bake_until: int | None = None
    bake_ms: int | None = None
    approval: str = ""
    approval_waived_by: str = ""
    gate: str = ""
    promote_all: bool = False
    stop_reason: str = ""
    window_opens_at: int | None = None
    budget_max: int | None = None
    budget_scope: str = ""
    budget_on_exceed: str = ""
    budget_forgiven: int | None = None
    budget_exceeded_wave: int | None = None
    budget_exceeded_used: int | None = None
    budget_exceeded_max: int | None = None
    budget_exceeded_at: int | None = None
    #: None when absent (an empty answer is a refusal too).
    gate_status: str | None = None
    gate_answer: str = ""
    gate_checked_at: int | None = None
    gate_next_at: int | None = None
    gate_refusals: int | None = None
    counts: Mapping[TaskStatus, int] = field(default_factory=dict)
    #: The hash as read: deployer/waves.py reads the per-wave fields from it.
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_hash(cls, raw: Mapping[str, str | None]) -> PlanRecord:
        """From HGETALL (or HMGET zipped with its fields): unknown fields are ignored,
        None (an HMGET of a missing field) is absent, corrupt values read as absent."""
        present = {k: v for k, v in raw.items() if v is not None}
        values: dict[str, Any] = {"raw": present}
        for name, text in present.items():
            spec = _BY_FIELD.get(name)
            if spec is None:
                continue
            attr, parse = spec
            value = text if parse is None else parse(text)
            if value is not None:
                values[attr] = value
        counts = {}
        for status in TaskStatus:
            counter = present.get(count_field(status))
            n = _int(counter) if counter is not None else None
            if n:
                counts[status] = n
        values["counts"] = counts
        record = object.__new__(cls)
        record.__dict__.update(values)
        return record

    def wave_records(self) -> list[WaveRecord]:
        """Each of the plan's `waves` as stored (in one pass over the hash)."""
        count = self.waves or 0
        counts: list[dict[str, int]] = [{} for _ in range(count)]
        for name, text in self.raw.items():
            if not name.startswith("w:"):
                continue
            index, _, rest = name[2:].partition(":")
            if not rest.startswith("c:"):
                continue
            i, n = _int(index), _int(text)
            if i is not None and 0 <= i < count and n:
                counts[i][rest[2:]] = n
        return [WaveRecord.read(self.raw, i, counts[i]) for i in range(count)]

    @property
    def has_strategy(self) -> bool:
        """Whether the plan rolls out in waves (its `strategy` is stored)."""
        return bool(self.strategy)

    def count(self, status: TaskStatus) -> int:
        """Tasks in `status` (0 when none or unreadable)."""
        return self.counts.get(status, 0)

    def counts_as_stored(self) -> dict[str, int]:
        """The non-zero task counters by status name in the hash's order, not `counts`'
        (the archive keeps a plan's counts as Redis held them, deployer/retention.py)."""
        out = {}
        for name, text in self.raw.items():
            status = name[2:]
            if name.startswith("c:") and status in _STATUSES:
                n = _int(text)
                if n:
                    out[status] = n
        return out

    def counter(self, name: PlanCounter) -> int:
        """The metric counter `name` (0 when absent or unreadable), from the hash as read."""
        return _int(self.raw.get(counter_field(name), "0")) or 0


@dataclass(frozen=True)
class WaveRecord:
    """One wave's fields of the plan hash (`PlanRecord.wave_records`): numbers and times
    None when absent or unreadable; who approved or promoted None when nobody did ("" is an
    approval without a name)."""

    index: int
    tenants: int = 0
    #: Its tasks per status (non-zero counters, as the hash lists them).
    counts: Mapping[str, int] = field(default_factory=dict)
    budget: int | None = None
    forgiven: int | None = None
    started_at: int | None = None
    ended_at: int | None = None
    approved_by: str | None = None
    approved_at: int | None = None
    promoted_by: str | None = None
    promoted_at: int | None = None
    no_bake: bool = False

    @classmethod
    def read(cls, raw: Mapping[str, str], index: int, counts: Mapping[str, int]) -> WaveRecord:
        def text(name: WaveField) -> str | None:
            return raw.get(wave_field(index, name))

        def number(name: WaveField) -> int | None:
            value = text(name)
            return _int(value) if value is not None else None

        return cls(
            index=index,
            tenants=number(WaveField.TENANTS) or 0,
            counts=counts,
            budget=number(WaveField.BUDGET),
            forgiven=number(WaveField.FORGIVEN),
            started_at=number(WaveField.STARTED_AT),
            ended_at=number(WaveField.ENDED_AT),
            approved_by=text(WaveField.APPROVED_BY),
            approved_at=number(WaveField.APPROVED_AT),
            promoted_by=text(WaveField.PROMOTED_BY),
            promoted_at=number(WaveField.PROMOTED_AT),
            no_bake=text(WaveField.NO_BAKE) == "1",
        )


_ATTR: dict[PlanField, str] = {}
_BY_FIELD: dict[str, tuple[str, Callable[[str], Any] | None]] = {}
for _f in fields(PlanRecord):
    if _f.name in ("raw", "counts"):
        continue
    _name = PlanField["".join(c.upper() if c.isalpha() else c for c in _f.name)]
    _ATTR[_name] = _f.name
    _parse = {"int | None": _int, "bool": _flag}.get(str(_f.type))
    _BY_FIELD[_name.value] = (_f.name, _parse)
assert set(_ATTR) == set(PlanField), "every PlanField has a PlanRecord attribute and back"


# ---- reads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanPage:
    """A filtered scan of a plan's (or a wave's) task list (lua/task_scan.lua)."""

    #: The position after the last task looked at (where the next page starts).
    position: int
    task_ids: list[str]
    #: How many tasks the list holds.
    total: int


_SCAN: list[Script] = []


class Plans:
    """Reads of plans, their task lists and the tenants' latest tasks on one state Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    @classmethod
    def of(cls, store: Store) -> Plans:
        return cls(store.r)

    # ---- one plan ---------------------------------------------------------------------

    def get(self, plan_id: str) -> PlanRecord | None:
        """The whole plan hash; None when there is no such plan."""
        raw: dict[str, str] = self.r.hgetall(keys.plan(plan_id))  # type: ignore[assignment]
        return PlanRecord.from_hash(raw) if raw else None

    def status(self, plan_id: str) -> str | None:
        """The plan's public `status` field; None when there is no such plan (yet)."""
        value = self.r.hget(keys.plan(plan_id), PlanField.STATUS.value)
        return str(value) if value is not None else None

    def get_with_task_ids(self, plan_id: str, count: int) -> tuple[PlanRecord | None, list[str]]:
        """The plan and its first `count` task ids (0: none), in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys.plan(plan_id))
        if count > 0:
            pipe.lrange(keys.plan_tenants(plan_id), 0, count - 1)
        raw, *ids = pipe.execute()
        if not raw:
            return None, []
        return PlanRecord.from_hash(raw), [str(i) for i in ids[0]] if ids else []

    def fields(self, plan_id: str, *wanted: PlanField) -> PlanRecord | None:
        """Only the `wanted` fields of the plan; None when there is no such plan."""
        names = [f.value for f in wanted]
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(keys.plan(plan_id))
        pipe.hmget(keys.plan(plan_id), names)
        exists, values = pipe.execute()
        if not exists:
            return None
        return PlanRecord.from_hash(dict(zip(names, values, strict=True)))

    # ---- many plans -------------------------------------------------------------------

    def get_many(self, plan_ids: list[str]) -> list[PlanRecord | None]:
        """Whole plan hashes in one pipelined round trip; None for a plan that is gone."""
        if not plan_ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for plan_id in plan_ids:
            pipe.hgetall(keys.plan(plan_id))
        return [PlanRecord.from_hash(raw) if raw else None for raw in pipe.execute()]

    def newest(self, start: int, count: int) -> tuple[list[str], int]:
        """Plan ids newest first from position `start` (at most `count`), and how many plans
        there are, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zrevrange(keys.PLANS, start, start + count - 1)
        pipe.zcard(keys.PLANS)
        ids, total = pipe.execute()
        return [str(p) for p in ids], int(total)

    def newest_ids(self, count: int) -> list[str]:
        """The newest `count` plan ids, newest first."""
        return [str(p) for p in self.r.zrevrange(keys.PLANS, 0, count - 1)]

    def created_between(
        self, newest: int | str, oldest: int | str, offset: int, count: int
    ) -> list[tuple[str, int]]:
        """(plan id, created ms) of plans created in [oldest, newest] ('+inf'/'-inf' for no
        bound), newest first, skipping `offset` and at most `count`."""
        rows: list[tuple[str, float]] = self.r.zrevrangebyscore(  # type: ignore[assignment]
            keys.PLANS, newest, oldest, start=offset, num=count, withscores=True
        )
        return [(str(p), int(score)) for p, score in rows]

    # ---- a plan's tasks ---------------------------------------------------------------

    def task_id_page(
        self, plan_id: str, start: int, count: int, wave: int | None = None
    ) -> tuple[list[str], int]:
        """`count` task ids of the plan (or of wave `wave`) from position `start`, and how
        many the list holds, in one round trip."""
        listed = _listed(plan_id, wave)
        pipe = self.r.pipeline(transaction=False)
        pipe.llen(listed)
        pipe.lrange(listed, start, start + count - 1)
        total, ids = pipe.execute()
        return [str(i) for i in ids], int(total)

    def scan_task_ids(
        self,
        plan_id: str,
        start: int,
        scan: int,
        limit: int,
        *,
        status: str = "",
        search: str = "",
        wave: int | None = None,
    ) -> ScanPage:
        """The first `limit` tasks of the plan (or wave) from position `start` whose status
        is `status` and whose tenant id contains `search` (lower case; '' for any), looking
        at no more than `scan` tasks, server-side (lua/task_scan.lua, read-only); with the
        list's length."""
        if not _SCAN:
            _SCAN.append(scripts.load(self.r, "task_scan"))
        listed = _listed(plan_id, wave)
        total = int(self.r.llen(listed))
        # a script in a pipeline costs a SCRIPT EXISTS round trip of its own: sent alone
        raw = _SCAN[0](
            keys=[listed],
            args=[start, start + max(1, scan) - 1, limit, status, search, keys.task(""),
                  task_id_for(plan_id, "")],
            client=self.r,
        )  # fmt: skip
        return ScanPage(int(raw[0]), [str(t) for t in raw[1:]], total)

    def in_flight_task_ids(self, plan_id: str, scan: int = 5000) -> list[str]:
        """The plan's tasks among the first `scan` tasks in flight anywhere (the reconciler's
        watch list, soonest deadline first)."""
        prefix = task_id_for(plan_id, "")
        return [str(m) for m in self.r.zrange(keys.INFLIGHT, 0, scan) if str(m).startswith(prefix)]

    # ---- tenants ----------------------------------------------------------------------

    def latest_task_ids(self, tenant_ids: Iterable[str]) -> list[str | None]:
        """Each tenant's latest task id (None: none), in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for tenant_id in tenant_ids:
            pipe.get(keys.tenant(tenant_id))
        return [str(v) if v is not None else None for v in pipe.execute()]

    # ---- refusals ---------------------------------------------------------------------

    def rejection(self, plan_id: str, since: str = "0-0") -> dict[str, str] | None:
        """The newest refusal of `plan_id` in the public stream `deployer:rejections` since
        entry `since`, with its entry id as `id`; None when there is none."""
        entries: list[tuple[str, dict[str, str]]] = self.r.xrange(  # type: ignore[assignment]
            keys.REJECTIONS, min=since, max="+"
        )
        for entry_id, entry in reversed(entries):
            if entry.get("planId") == plan_id:
                return {**entry, "id": entry_id}
        return None


def _listed(plan_id: str, wave: int | None) -> str:
    return keys.plan_tenants(plan_id) if wave is None else keys.plan_wave(plan_id, wave)


def written_config(
    store: Store, tenant_id: str, target: redis.Redis | None = None
) -> dict[str, str] | None:
    """The tenant's config hash on `target` (None: the target is the state Redis itself, as
    it is unless DEPLOYER_TARGET_REDIS_URL names another server); None when the key is not a
    hash (a write failed on it)."""
    client = target if target is not None else store.r
    return read_config(client, store.settings.key_prefix, tenant_id)
