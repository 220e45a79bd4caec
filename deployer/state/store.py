"""The Redis repository: plans, tasks, leases, checkpoints and events.

Every state change that must be atomic is one Lua script (deployer/state/lua), so a stage's
bookkeeping costs one round trip at its start (which also records the previous stage's end,
when that stage left it there) and one at the end of the last stage or of one that ran
long, and a reader never sees a task's status disagree with its plan's counters.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis

from deployer.context import PREVIOUS_STAGE_ENDED_AT, Run, TaskRuntimeContext
from deployer.errors import Code, PlanBusy
from deployer.models import StageSpec, TaskStatus, task_id_for
from deployer.settings import Settings
from deployer.state import keys, scripts
from deployer.state.record import Field, TaskRecord, field_names
from deployer.state.replies import FailVerdict, StageEnd, StageGate, fail_verdict
from deployer.worker_id import worker_label

log = logging.getLogger("deployer.store")

#: A stage that ran at most this share of the lease TTL leaves its end to the next stage's
#: begin (docs/reliability.md, "A stage's end"); every begin holds the lease that much longer.
FOLD_WINDOW_SHARE = 0.1
#: How long a big plan's creation claim lives without a slice written (renewed by each).
CLAIM_TTL_MS = 30_000


def _busy(plan_id: str, what: str) -> PlanBusy:
    return PlanBusy(f"plan {plan_id} {what}")


def _wait_for_creator(plan_id: str, deadline: float) -> None:
    """Another submit is writing this planId in slices: wait for its plan to appear."""
    if time.monotonic() > deadline:
        raise _busy(plan_id, "is being created by another submit")
    time.sleep(0.05)


def now_ms() -> int:
    return int(time.time() * 1000)


def rejection_entry(
    plan_id: str | None,
    code: str,
    message: str,
    errors: list[dict[str, str]],
    error_count: int | None,
    settings: Settings,
) -> dict[str, str | int]:
    """The fields of one rejection: `errors` is a JSON list of the first `{field, reason}`
    that fit in `max_rejection_bytes` (each field and reason shortened), `errorCount` how
    many the plan had in all."""
    budget = settings.max_rejection_bytes
    kept: list[dict[str, str]] = []
    for error in errors[: settings.max_rejection_errors]:
        short = {
            "field": str(error.get("field", ""))[:200],
            "reason": str(error.get("reason", ""))[:500],
        }
        budget -= len(json.dumps(short)) + 2
        if budget < 0:
            break
        kept.append(short)
    return {
        "planId": plan_id or "",
        "code": code,
        "message": message[:500],
        "errors": json.dumps(kept),
        "errorCount": len(errors) if error_count is None else error_count,
        "ts": now_ms(),
    }


def read_tasks(
    client: redis.Redis, task_ids: list[str], fields: Iterable[Field]
) -> list[TaskRecord]:
    """`fields` of each task, in one round trip (an HMGET each, pipelined): the read
    models ask only for what they show. A missing task reads as an empty record."""
    names = field_names(fields)
    pipe = client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hmget(keys.task(task_id), names)
    return [TaskRecord.from_hash(dict(zip(names, row, strict=True))) for row in pipe.execute()]


class TaskRow(NamedTuple):
    """What a new plan stores per task: the rest is built when the task is first sent."""

    tenant_id: str
    stage_count: int
    config_json: str


@dataclass(frozen=True)
class Slot:
    """A task given a slot (or re-driven), as stored: `Planner.launch` turns it into a
    Dispatch. run_json/ctx_json are '' for a task never dispatched before; its run is built
    from config_json then, so a big plan pays for stage specs one wave at a time."""

    task_id: str
    plan_id: str
    token: str
    run_id: str
    run_json: str
    ctx_json: str
    config_json: str


@dataclass(frozen=True)
class WavePlan:
    """What a plan with a strategy stores beside its tasks (deployer/waves.py builds it)."""

    #: Each task's wave index, in the order of the plan's rows.
    wave_of: list[int]
    #: Fields of the plan hash: the strategy, wave sizes, budgets, the first wave's state.
    fields: dict[str, str | int]


@dataclass(frozen=True)
class WaveOutcome:
    """What one wave step did (see lua/wave_step.lua for the outcomes)."""

    outcome: str
    #: A wave's tasks were queued: the caller fills the plan's slots.
    started: bool
    wave: int
    #: GATE: the gate's name; REFUSED/WRONG_WAVE: the current wave's state; ALREADY: who
    #: approved; BUDGET: the new max.
    detail: str


@dataclass(frozen=True)
class WaveOp:
    """An operator's or a gate's input to the wave step (lua/wave_step.lua, its ARGV)."""

    op: str = ""
    by: str = ""
    reason: str = ""
    #: The wave the op is for ('' = none given).
    wave: str = ""
    #: '' (no window), 'OPEN' or 'CLOSED:<ms it opens>' (deployer/window.py).
    window: str = ""
    a1: str = ""
    a2: str = ""


@dataclass(frozen=True)
class Dispatch:
    """A task given a concurrency slot: the caller sends its chain from `context`."""

    task_id: str
    token: str
    run: Run
    context: TaskRuntimeContext


class Store:
    """Plans and tasks in Redis; the only module that knows the hash layouts."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.r = client
        self.settings = settings
        self._begin = scripts.load(client, "stage_begin")
        self._end = scripts.load(client, "stage_end")
        self._fail = scripts.load(client, "task_fail")
        self._create = scripts.load(client, "plan_create")
        self._claim = scripts.load(client, "plan_claim")
        self._slice = scripts.load(client, "plan_slice")
        self._finish = scripts.load(client, "plan_finish")
        self.claim_ttl_ms = CLAIM_TTL_MS
        self._fill = scripts.load(client, "plan_fill")
        self._wave_step = scripts.load(client, "wave_step")

    # ---- plans -------------------------------------------------------------------------

    def plan_exists(self, plan_id: str) -> bool:
        return bool(self.r.exists(keys.plan(plan_id)))

    def create_plan(self, plan_id: str, *args: Any, **kwargs: Any) -> bool:
        """`write_plan`, then (when it wrote) the wait for replicas: a plan reported created
        is on `wait_replicas` replicas, or a warning says it may not survive a failover."""
        created = self.write_plan(plan_id, *args, **kwargs)
        if created:
            self.await_replicas(f"plan {plan_id}")
        return created

    def await_replicas(self, what: str) -> int:
        """WAIT for `settings.wait_replicas` replicas (0: no wait), at most `redis_wait_ms`.
        Fewer in time is logged, not refused: the write is on the master, and the failover
        sweep (deployer/failover.py) covers what a lost suffix of writes undoes."""
        want = self.settings.wait_replicas
        if want <= 0:
            return 0
        got = int(self.r.wait(want, self.settings.redis_wait_ms))
        if got < want:
            log.warning(
                "%s reached %d of %d replica(s) within %d ms: a failover now could lose it",
                what, got, want, self.settings.redis_wait_ms,
            )  # fmt: skip
        return got

    def write_plan(
        self,
        plan_id: str,
        rows: list[TaskRow],
        max_concurrency: int,
        run_id_prefix: str,
        digest: str = "",
        waves: WavePlan | None = None,
    ) -> bool:
        """Write the plan, its tasks, tenant pointers and queue atomically; False if it exists.

        One script (lua/plan_create.lua): a reader sees all of the plan or none of it, and of
        two concurrent submitters of one plan id exactly one writes. Tasks store their config
        only; `Planner.launch` builds a task's run when it is first dispatched. Run ids are
        `run_id_prefix` + the task's position in hex, unique as long as the prefix is.
        `digest` (intake.plan_digest) is kept in the plan hash, field `digest`.
        With a strategy, `waves` gives each task's wave and the plan's wave fields.

        A plan of more than `plan_create_slice` tenants is written in slices instead
        (`_create_sliced`), with the same guarantees: one script for 100,000 tenants kept
        Redis from serving anyone else (every database) for seconds.
        """
        if len(rows) > self.settings.plan_create_slice:
            return self._create_sliced(plan_id, rows, max_concurrency, run_id_prefix, digest, waves)
        args: list[str | int] = [
            plan_id,
            now_ms(),
            max_concurrency,
            self.settings.events_maxlen,
            keys.task(""),
            keys.tenant(""),
            task_id_for(plan_id, ""),
            run_id_prefix,
            digest,
            json.dumps(waves.wave_of) if waves else "",
            keys.plan_wave(plan_id, ""),
            len(waves.fields) if waves else 0,
        ]
        for field, value in waves.fields.items() if waves else ():
            args += [field, value]
        for row in rows:
            args += row
        deadline = time.monotonic() + 4 * self.claim_ttl_ms / 1000
        while True:
            created = int(
                self._create(
                    keys=[
                        keys.plan(plan_id),
                        keys.PLANS,
                        keys.EVENTS,
                        keys.plan_tenants(plan_id),
                        keys.plan_queue(plan_id),
                        keys.plan_claim(plan_id),
                        keys.PLAN_TIMERS,
                    ],
                    args=args,
                )
            )
            if created != -1:
                return bool(created)
            _wait_for_creator(plan_id, deadline)

    def _create_sliced(
        self,
        plan_id: str,
        rows: list[TaskRow],
        max_concurrency: int,
        run_id_prefix: str,
        digest: str,
        waves: WavePlan | None = None,
    ) -> bool:
        """Claim the planId (lua/plan_claim), write the tasks a slice per script
        (lua/plan_slice), then tenant pointers and the plan hash last (lua/plan_finish).

        Until the last script nothing reachable exists: no plan hash, no tenant pointer, so
        no reader, command or fill sees half a plan. Of concurrent creators one claims; the
        others wait for the plan to appear and return False (exists), as with one script. A
        creator that dies mid-way leaves its claim to expire (`claim_ttl_ms`); the next claims
        and rewrites, and only task hashes of tenants it no longer has remain, unreachable.
        """
        token = uuid.uuid4().hex
        claim = keys.plan_claim(plan_id)
        tenants, queue = keys.plan_tenants(plan_id), keys.plan_queue(plan_id)
        deadline = time.monotonic() + 4 * self.claim_ttl_ms / 1000
        while True:
            got = int(self._claim(keys=[keys.plan(plan_id), claim, tenants, queue],
                                  args=[token, self.claim_ttl_ms]))  # fmt: skip
            if got == 0:
                return False
            if got == 1:
                break
            _wait_for_creator(plan_id, deadline)
        size = self.settings.plan_create_slice
        task_key, task_id_prefix = keys.task(""), task_id_for(plan_id, "")
        wave_mode = ""
        if waves is not None:
            wave_mode = "RUNNING" if waves.fields.get("waveState") == "RUNNING" else "GATE"
        for start in range(0, len(rows), size):
            args: list[str | int] = [token, self.claim_ttl_ms, plan_id, now_ms(), task_key,
                                     task_id_prefix, run_id_prefix, start + 1]  # fmt: skip
            args += [
                json.dumps(waves.wave_of[start : start + size]) if waves else "",
                keys.plan_wave(plan_id, ""),
                "1" if wave_mode == "RUNNING" else "0",
                int(waves.fields["waves"]) if waves else 0,
            ]
            for row in rows[start : start + size]:
                args += row
            if not self._slice(keys=[claim, tenants, queue], args=args):
                raise _busy(plan_id, "lost its creation claim (a slice came too late)")
        extra: list[str | int] = []
        for field, value in waves.fields.items() if waves else ():
            extra += [field, value]
        finished = self._finish(
            keys=[keys.plan(plan_id), keys.PLANS, keys.EVENTS, tenants, claim, keys.PLAN_TIMERS],
            args=[plan_id, now_ms(), max_concurrency, self.settings.events_maxlen,
                  keys.tenant(""), task_id_prefix, token, digest, wave_mode,
                  len(extra) // 2, *extra],
        )  # fmt: skip
        if not finished:
            raise _busy(plan_id, "lost its creation claim before it finished")
        return True

    def fill(self, plan_id: str, max_batch: int = 100_000) -> list[Slot]:
        """Give free slots to waiting tasks (one round trip); the caller sends their chains."""
        return self.fill_due(plan_id, max_batch)[0]

    def fill_due(self, plan_id: str, max_batch: int = 100_000) -> tuple[list[Slot], bool]:
        """`fill`, and whether the plan's wave step is due (deployer/waves.py)."""
        raw = self._fill(
            keys=[keys.plan(plan_id), keys.plan_queue(plan_id), keys.INFLIGHT, keys.PLAN_TIMERS],
            args=[now_ms(), self._lease_ms(), keys.task(""), max_batch, plan_id],
        )
        due = bool(raw) and raw[-1] == "DUE"
        if due:
            raw = raw[:-1]
        return list(scripts.records(Slot, raw, "plan_fill", plan_id=plan_id)), due

    def attach_runs(self, runs: list[Run]) -> None:
        """Store the runs built for tasks dispatched for the first time (one round trip).

        HSETNX: a run already stored (by another dispatcher of the same slot) is kept, and
        so is a context a stage has already checkpointed.
        """
        pipe = self.r.pipeline(transaction=False)
        for run in runs:
            key = keys.task(run.context.task_id)
            pipe.hsetnx(key, Field.RUN.value, run.model_dump_json(by_alias=True))
            pipe.hsetnx(key, Field.CTX.value, run.context.to_json())
        pipe.execute()

    def plan_digest(self, plan_id: str) -> str | None:
        """The stored plan's digest; None when there is no plan, "" for a plan stored
        before digests were kept."""
        value = self.r.hget(keys.plan(plan_id), "digest")
        if value is None:
            return None if not self.plan_exists(plan_id) else ""
        return str(value)

    def reject(
        self,
        plan_id: str | None,
        errors: list[dict[str, str]],
        message: str,
        code: str = Code.PLAN_INVALID,
        error_count: int | None = None,
    ) -> None:
        """Append a refusal to the public stream `deployer:rejections`, bounded: the
        stream by count (`rejections_maxlen`), an entry by `max_rejection_bytes`; counted
        by code for the exporter in the same round trip (`deployer:stats`)."""
        entry: dict[Any, Any] = rejection_entry(
            plan_id, code, message, errors, error_count, self.settings
        )
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(
            keys.REJECTIONS,
            entry,
            maxlen=self.settings.rejections_maxlen,
            approximate=True,
        )
        pipe.hincrby(keys.STATS, f"rej|{entry.get('code') or code}", 1)
        pipe.execute()

    # ---- stages ------------------------------------------------------------------------

    def _lease_ms(self) -> int:
        return int(self.settings.lease_ttl_seconds * 1000)

    @property
    def fold_window_seconds(self) -> float:
        """How long a stage may run and still leave its end to the next stage's begin.

        Every begin sets the lease and the in-flight deadline for the lease TTL plus this
        window, so a stage that ended within it still has the whole TTL left for its next
        message's wait in the queue — the margin its own end used to renew. A stage that ran
        longer ends on its own (`end_stage`), renewing them as before."""
        return self.settings.lease_ttl_seconds * FOLD_WINDOW_SHARE

    def _task_keys(self, ctx: TaskRuntimeContext) -> list[str]:
        return [
            keys.task(ctx.task_id),
            keys.plan(ctx.plan_id),
            keys.lease(ctx.tenant_id),
            keys.INFLIGHT,
            keys.EVENTS,
        ]

    def begin_stage(self, ctx: TaskRuntimeContext, stage: StageSpec, worker: str = "") -> StageGate:
        """`worker` (the Celery node name) is recorded on the task and its stage events, as
        `{node}/{pid}` (deployer/worker_id.py): the node's heartbeat says if the run lives.

        The first message of a stage also records the previous stage's end when that stage
        left it to this round trip (`fold_window_seconds`): checkpoint, context, duration
        and STAGE_COMPLETED, once, before the control and lease checks."""
        running = TaskStatus.ROLLING_BACK if ctx.run_kind == "ROLLBACK" else TaskStatus.RUNNING
        raw = self._begin(
            keys=[
                *self._task_keys(ctx),
                keys.lease_epoch(ctx.tenant_id),
                keys.applied(ctx.tenant_id),
            ],
            args=[
                ctx.token,
                ctx.stage_index,
                stage.name,
                now_ms(),
                self._lease_ms() + int(self.fold_window_seconds * 1000),
                ctx.attempt,
                ctx.step_index,
                running.value,
                self.settings.max_redeliveries,
                self.settings.events_maxlen,
                ctx.to_json(),
                worker_label(worker),
                str(ctx.scratch.get("progress", "")),
                ctx.plan_id,
                ctx.tenant_id,
                ctx.lease_epoch,
                str(ctx.scratch.get(PREVIOUS_STAGE_ENDED_AT, "")),
            ],
        )
        return StageGate.from_reply(raw)

    def end_stage(self, ctx: TaskRuntimeContext, stage: StageSpec, is_last: bool) -> StageEnd:
        """Checkpoint `ctx` (already pointing at the next stage); finish the task if last.
        (A stage that is not the last and ended within the fold window leaves this to the
        next stage's `begin_stage`.)

        Returns the verdict and, when the task finished, how many tasks wait in its plan's
        queue (so the caller skips the fill round trip when none does).
        """
        final = TaskStatus.ROLLED_BACK if ctx.run_kind == "ROLLBACK" else TaskStatus.COMPLETED
        raw = self._end(
            keys=[*self._task_keys(ctx), keys.plan_queue(ctx.plan_id)],
            args=[
                ctx.token,
                ctx.checkpoint,
                stage.name,
                now_ms(),
                ctx.to_json(),
                "1" if is_last else "0",
                final.value,
                self.settings.events_maxlen,
                self._lease_ms(),
                ctx.plan_id,
                ctx.tenant_id,
            ],
        )
        return StageEnd.from_reply(raw)

    def fail(
        self, ctx: TaskRuntimeContext, stage_name: str, reason: str, code: str = Code.STEP_FAILED
    ) -> FailVerdict:
        """End the run as failed, with `reason` (`lastError`) and `code` (`failureCode`, a
        `Code`), unless another run owns the task now (STALE) or the message is forged."""
        raw = self._fail(
            keys=self._task_keys(ctx),
            args=[
                ctx.token,
                stage_name,
                now_ms(),
                reason[:2000],
                self.settings.events_maxlen,
                ctx.plan_id,
                ctx.tenant_id,
                code,
            ],
        )
        return fail_verdict(raw)

    # ---- waves ---------------------------------------------------------------

    def wave_step(self, plan_id: str, op: WaveOp | None = None) -> WaveOutcome:
        """Move the plan's waves on as far as they go now (lua/wave_step.lua; atomic)."""
        op = op or WaveOp()
        s = self.settings
        recheck = int(s.gate_recheck_seconds * 1000)
        # nobody else asks the gate while a call may still be out (its deadline, and a second)
        hold = max(recheck, int(s.gate_timeout_seconds * 1000) + 1000)
        raw = self._wave_step(
            keys=[keys.plan(plan_id), keys.PLAN_TIMERS, keys.EVENTS, keys.plan_queue(plan_id)],
            args=[plan_id, now_ms(), op.op, op.by, op.reason, keys.plan_wave(plan_id, ""),
                  recheck, op.wave, keys.task(""), op.window, op.a1, op.a2, hold],
        )  # fmt: skip
        wave = int(raw[2]) if raw[2] not in ("", None) else -1
        return WaveOutcome(str(raw[0]), raw[1] == "1", wave, str(raw[3]))

    def due_now(self, plan_id: str) -> None:
        """Make the plan's wave step due at once (the next reconciler tick runs it)."""
        self.r.zadd(keys.PLAN_TIMERS, {plan_id: now_ms()})

    def due_plans(self, now: int | None = None, limit: int = 100) -> list[str]:
        """Plans whose wave step is due (bake over, gate re-check, wave finished)."""
        stamp = now if now is not None else now_ms()
        return self.r.zrangebyscore(keys.PLAN_TIMERS, "-inf", stamp, 0, limit)  # type: ignore[return-value]

    def next_due(self) -> int | None:
        """When the earliest wave step is due (ms), None when no plan waits on a time."""
        first = self.r.zrange(keys.PLAN_TIMERS, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    # ---- reads -------------------------------------------------------------------------

    def plan_task_ids(self, plan_id: str, start: int = 0, end: int = -1) -> list[str]:
        return self.r.lrange(keys.plan_tenants(plan_id), start, end)  # type: ignore[return-value]

    def get_task(self, task_id: str) -> TaskRecord | None:
        """The whole task hash; None when there is no such task."""
        raw: dict[str, str] = self.r.hgetall(keys.task(task_id))  # type: ignore[assignment]
        return TaskRecord.from_hash(raw) if raw else None

    def get_whole_tasks(self, task_ids: list[str]) -> list[TaskRecord | None]:
        """Whole task hashes in one pipelined round trip; None for a task that is gone."""
        if not task_ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hgetall(keys.task(task_id))
        return [TaskRecord.from_hash(raw) if raw else None for raw in pipe.execute()]

    def get_tasks(self, task_ids: list[str], fields: Iterable[Field]) -> list[TaskRecord]:
        return read_tasks(self.r, task_ids, fields)

    def task_id_for_tenant(self, tenant_id: str) -> str | None:
        value = self.r.get(keys.tenant(tenant_id))
        return str(value) if value is not None else None
