"""Commands for every task of a plan — pause, resume, cancel, retry, rollback — that answer
within a second however big the plan is.

The plan-level part takes effect at once, in one round trip: the plan's flag (PAUSE or
CANCEL: no slot is filled, and every stage start checks the flag in its own round trip, so
no stage of the plan starts after the command answered), a rollback's halted waves (no
tenant that never started starts). The per-task bookkeeping — each task's status, event,
queue entry — is a **job** worked through in bounded slices (`SLICE` tasks per round trip
of reads and one pipelined round trip of compare-and-set writes): the command does as many
slices as fit in `SYNC_SECONDS` and answers; the plan-timer loop of every worker
(deployer/timers.py) does the rest, one slice at a time under a lock, so any worker picks
up a job whose worker died. While a job runs, the plan hash holds `job` and the plan does
not read as finished; PLAN_<COMMAND> is recorded when the last slice is done, with what the
command did. A newer plan command replaces an unfinished job (the newer decision wins).

Order is kept as a small plan's was: resume queues the tenants paused mid-flight first (a
backward pass pushing to the queue's front) and the others after them, each in submission
order; retry queues in submission order; rollback goes newest first (by when each tenant
started, sorted in Redis) and, on a plan with waves, cancels the tenants that never started.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import LockError
from redis.lock import Lock

from deployer.command_rules import (
    SUPERSEDED,
    TASK_FIELDS,
    Target,
    Write,
    decide_task,
    unrestored_answer,
)
from deployer.errors import Code, DeployerError, NotFound, PlanArchived
from deployer.lifecycle import Command, Decision, Effect
from deployer.models import TaskStatus
from deployer.state.commands import (
    Commands,
    QueueOp,
    SliceDecided,
    SliceQueueOp,
    TaskCommand,
    Which,
)
from deployer.state.plans import PlanField, PlanRecord, Plans
from deployer.state.record import TaskRecord
from deployer.state.store import Store

if TYPE_CHECKING:  # the controller builds this class and is called back through it
    from deployer.control import Controller

log = logging.getLogger("deployer.control")

#: Tasks decided per slice: one pipelined read and one pipelined write each.
SLICE = 500
#: Tasks per script of a pause or resume (plan_pause_slice.lua decides them in Redis): one
#: holds Redis about as long as a cancel slice (≈ 10–40 ms on a busy 2-core machine).
STATUS_SLICE = 500
#: Tasks per round trip of a whole-plan cancel (plan_cancel_slice.lua): each slice holds
#: Redis ~60 ms on a busy 2-core machine (1,000: ~110 ms), so workers' stage scripts wait
#: at most that long behind it.
CANCEL_SLICE = 500
#: Tasks read per slice of a rollback's ordering pass (one field each).
ORDER_SLICE = 2000
#: How long a command works through slices before it answers (the rest: in the background).
SYNC_SECONDS = 0.3
#: A slice's lock outlives a worker that died holding it by this much at most.
LOCK_SECONDS = 30
#: Refused tasks listed in an answer and a job.
LISTED = 50

#: The passes of each command's job, in order.
PHASES: dict[Command, tuple[str, ...]] = {
    Command.PAUSE: ("forward",),
    Command.CANCEL: ("cancel",),
    Command.RESUME: ("mid-flight", "forward"),
    Command.RETRY: ("backward",),
    Command.ROLLBACK: ("order", "newest-first"),
}
#: A rollback's count of tenants that never started (skipped: it covers what changed).
NEVER_STARTED = "NEVER_STARTED"
#: Commands whose slices queue runs: the plan's free slots are filled after each.
QUEUES_RUNS = frozenset({Command.RESUME, Command.RETRY, Command.ROLLBACK})


@dataclass
class Job:
    """A plan command's job as stored (hash deployer:plan:{P}:job)."""

    plan_id: str
    gen: int
    command: Command
    by: str
    reason: str
    force: bool
    from_checkpoint: bool
    total: int
    phase: str
    pos: int
    counts: Counter[str] = field(default_factory=Counter)
    refused: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Tasks decided so far (counted, or cancelled by a rollback before they started).
    seen: int = 0
    done: bool = False
    #: rollback: refuse a task's rollback that cannot restore every service.
    strict: bool = False
    #: rollback: the first (tenant, service, reason) it cannot restore.
    unrestored: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_hash(cls, plan_id: str, job: dict[str, str]) -> Job | None:
        try:
            command = Command(job["command"])
            phase = job.get("phase") or PHASES[command][0]
            return cls(
                plan_id=plan_id,
                gen=int(job["gen"]),
                command=command,
                by=job.get("by", ""),
                reason=job.get("reason", ""),
                force=job.get("force") == "1",
                from_checkpoint=job.get("fromCheckpoint") == "1",
                total=int(job.get("total") or 0),
                phase=phase,
                pos=int(job.get("pos") or 0),
                counts=Counter(json.loads(job.get("counts") or "{}")),
                refused=json.loads(job.get("refused") or "[]"),
                notes=json.loads(job.get("notes") or "[]"),
                seen=int(job.get("seen") or 0),
                done=job.get("done") == "1",
                strict=job.get("strict") == "1",
                unrestored=json.loads(job.get("unrestored") or "[]"),
            )
        except (KeyError, ValueError):
            return None

    def saved(self) -> dict[str, str | int]:
        return {
            "phase": self.phase,
            "pos": self.pos,
            "counts": json.dumps(dict(self.counts)),
            "refused": json.dumps(self.refused[:LISTED]),
            "notes": json.dumps(self.notes[:5]),
            "seen": self.seen,
            "unrestored": json.dumps(self.unrestored[:100]),
        }

    def add(self, outcomes: Counter[str], refused: list[dict[str, str]], notes: list[str]) -> None:
        self.counts.update(outcomes)
        self.seen += sum(outcomes.values())
        self.refused += refused[: max(0, LISTED - len(self.refused))]
        self.notes += notes[: max(0, 5 - len(self.notes))]


class PlanCommands:
    """The plan-wide commands of a `Controller` (it decides and writes each task)."""

    def __init__(self, controller: Controller) -> None:
        self.c = controller

    @property
    def store(self) -> Store:
        return self.c.store

    @property
    def commands(self) -> Commands:
        return self.c.commands

    @property
    def plans(self) -> Plans:
        return Plans.of(self.store)

    # ---- the command -------------------------------------------------------------------

    def run(
        self,
        command: Command,
        plan_id: str,
        by: str,
        reason: str,
        force: bool,
        from_checkpoint: bool,
        budget_seconds: float | None = None,
        strict: bool = False,
    ) -> dict[str, Any]:
        """Take the plan-wide part at once, then work through the tasks for at most
        `budget_seconds` (default SYNC_SECONDS) and answer what was done, or that the rest
        follows in the background."""
        plan = self.plans.get(plan_id)
        archived = _archived(self.store, plan_id) if plan is None else plan.archived_at is not None
        if archived:
            # what stays live of it is each tenant's newest task: `--tenant T` acts on those.
            # Marked after this read: plan_control.lua and plan_job.lua refuse it the same way
            raise PlanArchived(plan_id)
        if plan is None:
            raise NotFound(f"no plan {plan_id}", code=Code.PLAN_NOT_FOUND)
        refusal = self._refused_by_all(command, plan_id, plan, force)
        if refusal is not None:
            return refusal
        if command is Command.ROLLBACK and plan.has_strategy:
            self.c.rollout.halt(plan_id, by, reason or "plan rolled back")
        flag = {Command.PAUSE: "PAUSE", Command.CANCEL: "CANCEL"}.get(command, "")
        self.commands.plan_control(plan_id, flag, by, reason, "")
        total = self.commands.tenant_count(plan_id)
        lock = self._lock(plan_id)
        # a slice of an earlier command may hold it for a few ms (a slice is short)
        if not lock.acquire(blocking=True, blocking_timeout=2.0):
            raise DeployerError(f"plan {plan_id}: another command holds it; try again",
                                code=Code.TASK_BUSY)  # fmt: skip
        try:
            gen = self.commands.job_start(plan_id, command.value, by, reason, force,
                                          from_checkpoint, total, strict)  # fmt: skip
        finally:
            _release(lock)
        seconds = SYNC_SECONDS if budget_seconds is None else budget_seconds
        job = self.work(plan_id, time.monotonic() + seconds, gen)
        return self._answer(command, plan_id, job, total)

    def _answer(
        self, command: Command, plan_id: str, job: Job | None, total: int
    ) -> dict[str, Any]:
        target = Target(plan_id=plan_id)
        if job is None:  # a newer command replaced this one before its first slice
            return {"ok": True, "code": Code.OK, "counts": {},
                    "message": f"{command.value} plan {plan_id}: in effect; a newer command "
                    "took over its tasks"}  # fmt: skip
        counts = Counter({k: v for k, v in job.counts.items() if k != NEVER_STARTED})
        skipped = job.counts[Effect.REFUSE.value] + job.counts[NEVER_STARTED]
        if job.done:
            answer = self.c.answer(command, target, counts, job.refused, job.notes, skipped)
            if job.unrestored and answer["ok"]:
                answer.update(unrestored_answer(target, job.unrestored, answer["message"]))
            return answer
        pending = max(0, total - job.seen)
        acted = sum(job.counts.get(e.value, 0) for e in (Effect.NOW, Effect.REQUEST,
                                                         Effect.WITHDRAW))  # fmt: skip
        return {
            "ok": True,
            "code": Code.OK,
            "message": f"{command.value} plan {plan_id}: in effect for the plan; "
            f"{acted} task(s) acted on so far, about {pending} more being worked through "
            "in the background",
            "counts": {k: v for k, v in counts.items() if v},
            "pending": pending,
            "skipped": job.refused[:LISTED],
        }

    def _refused_by_all(
        self, command: Command, plan_id: str, plan: PlanRecord, force: bool
    ) -> dict[str, Any] | None:
        """When no task of the plan allows the command (read from the plan's counters), the
        refusal — no plan flag is set and no PLAN_ event recorded; else None."""
        for status in TaskStatus:
            if not plan.count(status):
                continue
            probe = TaskRecord(status=status, started_at=1)
            if decide_task(command, probe, force).effect is not Effect.REFUSE:
                return None
        sample = self.store.get_tasks(self.store.plan_task_ids(plan_id, 0, LISTED - 1), TASK_FIELDS)
        refused = [self.c.refusal(command, t, force) for t in sample if t.status]
        everyone = Counter({Effect.REFUSE.value: plan.total or 0})
        return self.c.answer(command, Target(plan_id=plan_id), everyone, refused, [])

    # ---- the job, a slice at a time ---------------------------------------------------

    def continue_jobs(self, seconds: float) -> int:
        """Work on every plan whose command is not done, for at most `seconds` in all (a
        worker's plan-timer loop); the slices done."""
        deadline = time.monotonic() + seconds
        done = 0
        for plan_id in self.commands.unfinished_jobs(50):
            if time.monotonic() > deadline:
                break
            job_hash = self._job_hash(plan_id)
            if Job.from_hash(plan_id, job_hash) is None:
                self.commands.job_drop(plan_id, job_hash.get("gen", ""))  # gone or unreadable
                continue
            if self.work(plan_id, deadline, wait=False) is not None:
                done += 1
        return done

    def work(
        self, plan_id: str, deadline: float, gen: int | None = None, wait: bool = True
    ) -> Job | None:
        """Slices of the plan's job until it is done or `deadline` (monotonic) passes: the
        job as it stands (`done` once its last slice is: a finished job's record stays a
        while, so a command whose job a worker finished still answers with what it did), or
        None when there is none (or a newer command than `gen` replaced it). With `wait`
        (a command's own slices) the lock is waited for, never past the deadline: a worker
        holding it meanwhile is doing this job's next slice."""
        job: Job | None = None
        while True:
            lock = self._lock(plan_id)
            left = max(0.0, deadline - time.monotonic())
            if wait and left > 0:
                got = lock.acquire(blocking=True, blocking_timeout=left)
            else:
                got = lock.acquire(blocking=False)
            if not got:
                return self._current(plan_id, gen)
            try:
                job = self._current(plan_id, gen)
                if job is None or job.done:
                    return job
                self._slice(job)
                if job.done:
                    self._finish(job)
                else:
                    self.commands.save_job(plan_id, job.saved())
            finally:
                _release(lock)
            if job.command in QUEUES_RUNS:
                self.c.planner.dispatch(plan_id)
            if job.done or time.monotonic() > deadline:
                return job

    def _current(self, plan_id: str, gen: int | None) -> Job | None:
        """The plan's job, if it is still generation `gen` (when given)."""
        job = self._job(plan_id)
        return job if job is not None and (gen is None or job.gen == gen) else None

    def _job_hash(self, plan_id: str) -> dict[str, str]:
        return self.commands.job_hash(plan_id)

    def _job(self, plan_id: str) -> Job | None:
        return Job.from_hash(plan_id, self._job_hash(plan_id))

    def _lock(self, plan_id: str) -> Lock:
        return self.commands.job_lock(plan_id, LOCK_SECONDS)

    def _finish(self, job: Job) -> None:
        """Record what the command did (PLAN_<COMMAND>) and release the plan; the job's
        record stays an hour, marked done, for a command still waiting on it."""
        self.commands.save_job(job.plan_id, job.saved())
        acted = sum(job.counts.get(e.value, 0) for e in (Effect.NOW, Effect.REQUEST,
                                                         Effect.WITHDRAW))  # fmt: skip
        self.commands.job_done(
            job.plan_id,
            job.gen,
            acted,
            job.counts.get(Effect.ALREADY.value, 0),
            job.counts.get(Effect.REFUSE.value, 0) + job.counts.get(NEVER_STARTED, 0),
            job.counts.get("SUPERSEDED", 0),
            unlink_queue=job.command is Command.PAUSE,
        )

    def _slice(self, job: Job) -> None:
        """One slice of the job's current pass; moves it to the next pass, or marks it
        done, when the pass is through."""
        through = {
            "forward": self._forward,
            "mid-flight": self._mid_flight,
            "backward": self._backward,
            "cancel": self._cancel_slice,
            "order": self._order,
            "newest-first": self._newest_first,
        }[job.phase](job)
        if through:
            phases = PHASES[job.command]
            i = phases.index(job.phase)
            if i + 1 < len(phases):
                job.phase, job.pos = phases[i + 1], 0
            else:
                job.done = True

    # ---- the passes --------------------------------------------------------------------

    def _tasks(self, ids: list[str]) -> list[TaskRecord]:
        return [t for t in self.store.get_tasks(ids, TASK_FIELDS) if t.status]

    def _forward(self, job: Job) -> bool:
        """pause: every task; resume: the tenants that never started (to the queue's back,
        behind the mid-flight ones, in submission order)."""
        which: Which = "UNSTARTED" if job.command is Command.RESUME else "ALL"
        self._pause_slice(job, job.pos, job.pos + STATUS_SLICE - 1, False, "PUSH_BACK", which)
        job.pos += STATUS_SLICE
        return job.pos >= job.total

    def _mid_flight(self, job: Job) -> bool:
        """resume: the tenants paused mid-flight (a stage had started: half applied), first:
        from the end of the plan, each pushed to the queue's front, so they end up there in
        submission order."""
        end = job.total - job.pos
        start = max(0, end - STATUS_SLICE)
        if end > 0:
            self._pause_slice(job, start, end - 1, True, "PUSH_FRONT", "STARTED")
        job.pos += end - start
        return job.pos >= job.total

    def _pause_slice(
        self,
        job: Job,
        start: int,
        stop: int,
        backward: bool,
        queue_op: SliceQueueOp,
        which: Which,
    ) -> None:
        """plan_pause_slice.lua: pause or resume the tasks at positions start..stop in one
        script, as lifecycle.decide would decide each."""
        decided = self.commands.pause_slice(
            job.plan_id, job.command is Command.RESUME, start, stop, backward=backward,
            queue_op=queue_op, which=which, by=job.by, reason=job.reason, force=job.force,
        )  # fmt: skip
        _add_slice(job, decided)

    def _backward_ids(self, job: Job) -> list[str]:
        """The next slice from the end of the plan's tenants, last one first: each pushed to
        the queue's front, they end up in submission order."""
        end = job.total - job.pos
        if end <= 0:
            return []
        start = max(0, end - SLICE)
        ids = self.store.plan_task_ids(job.plan_id, start, end - 1)
        job.pos += end - start
        return list(reversed(ids))

    def _backward(self, job: Job) -> bool:
        """retry: every failed task, queued in submission order."""
        self._decide_and_write(job, self._tasks(self._backward_ids(job)), "PUSH_FRONT")
        return job.pos >= job.total

    def _cancel_slice(self, job: Job) -> bool:
        """cancel: plan_cancel_slice.lua decides a slice of tasks in one script."""
        last = job.pos + CANCEL_SLICE >= job.total
        decided = self.commands.cancel_slice(
            job.plan_id, job.pos, job.pos + CANCEL_SLICE - 1, last=last, by=job.by,
            reason=job.reason, listed=LISTED,
        )  # fmt: skip
        _add_slice(job, decided)
        job.pos += CANCEL_SLICE
        return last

    def _order(self, job: Job) -> bool:
        """rollback, first pass: the started tenants into a zset by when they started (the
        next pass takes them newest first); on a plan with waves the tenants that never
        started are cancelled (their old config is still live), elsewhere they are
        skipped, as a plan rollback covers the tasks that changed something."""
        ids = self.store.plan_task_ids(job.plan_id, job.pos, job.pos + ORDER_SLICE - 1)
        tasks = self._tasks(ids)
        started = {t.task_id: t.started_at for t in tasks if t.started_at}
        self.commands.order_add(job.plan_id, started)
        never = [t for t in tasks if not t.started_at]
        read = self.plans.fields(job.plan_id, PlanField.STRATEGY)
        waves = read is not None and read.has_strategy
        stopping = [t for t in never if waves and t.status in (TaskStatus.PENDING,
                                                                TaskStatus.PAUSED)]  # fmt: skip
        if stopping:
            why = "plan rolled back before this tenant started"
            writes = [self._cancel_write(t, job.by, why) for t in stopping]
            for task, written in zip(stopping, self.commands.task_commands(writes), strict=True):
                if not written.applied:  # its status moved on: decide it again on its own
                    self.c.apply(Command.CANCEL, task, job.by, why, False, queue_op="")
            job.seen += len(stopping)
        stopped = {t.task_id for t in stopping}
        skipped = [t for t in never if t.task_id not in stopped]
        refused = [self.c.refusal(Command.ROLLBACK, t, job.force) for t in skipped]
        # listed as skipped, not counted among the answers' effects (nothing was asked of them)
        job.add(Counter({NEVER_STARTED: len(skipped)}), refused, [])
        job.pos += len(ids)
        return len(ids) < ORDER_SLICE or job.pos >= job.total

    @staticmethod
    def _cancel_write(task: TaskRecord, by: str, why: str) -> TaskCommand:
        return TaskCommand(task, "TASK_CANCELLED", new_status=TaskStatus.CANCELLED.value,
                           control="CLEAR", invalidate=True, by=by, reason=why)  # fmt: skip

    def _newest_first(self, job: Job) -> bool:
        """rollback, second pass: the started tenants newest first, to the queue's back."""
        ids = self.commands.order_newest(job.plan_id, job.pos, SLICE)
        self._decide_and_write(job, self._tasks(ids), "PUSH_BACK")
        job.pos += len(ids)
        return len(ids) < SLICE

    # ---- deciding and writing a slice ----------------------------------------------------

    def _decide_and_write(self, job: Job, tasks: list[TaskRecord], queue_op: QueueOp) -> None:
        """Each task's decision (lifecycle.decide), and every write of the slice in one
        pipelined round trip; a task whose status moved in between (its compare-and-set
        lost) is decided again on its own."""
        command = job.command
        outcomes: Counter[str] = Counter()
        refused: list[dict[str, str]] = []
        notes: list[str] = []
        decided = [(t, self.c.preview(command, t, job.force)) for t in tasks]
        acting = [(t, d) for t, d in decided if d.effect not in (Effect.ALREADY, Effect.REFUSE)]
        whole = self._whole([t for t, d in acting if d.effect is Effect.NOW]
                            if command in (Command.RETRY, Command.ROLLBACK) else [])  # fmt: skip
        writes: list[Write] = []
        pending: list[tuple[TaskRecord, Decision]] = []
        for task, decision in decided:
            if decision.effect in (Effect.ALREADY, Effect.REFUSE):
                self._count(outcomes, refused, notes, task, decision)
                continue
            try:
                writes.append(self.c.task_command(
                    command, decision, task, job.by, job.reason, job.from_checkpoint,
                    job.force, queue_op, whole.get(task.task_id), strict=job.strict))  # fmt: skip
                pending.append((task, decision))
            except DeployerError as exc:
                refusal = Decision(Effect.REFUSE, code=exc.code, note=exc.message)
                self._count(outcomes, refused, notes, task, refusal)
        results = self.commands.task_commands([w.command for w in writes])
        for (task, decision), write, written in zip(pending, writes, results, strict=True):
            if written.applied:
                decision = self.c.written(decision, written, task, write.unrestored, job.by)
            else:
                fresh = self.store.get_tasks([task.task_id], TASK_FIELDS)[0]
                decision = self.c.apply(command, fresh, job.by, job.reason, job.from_checkpoint,
                                        job.force, queue_op, strict=job.strict)  # fmt: skip
            if len(job.unrestored) < 100:
                job.unrestored += [{"tenantId": task.tenant_id, **u.wire()}
                                   for u in decision.unrestored]  # fmt: skip
            if decision.to is TaskStatus.SUPERSEDED and command is Command.ROLLBACK:
                outcomes[SUPERSEDED] += 1
                notes.append(decision.note)
                continue
            self._count(outcomes, refused, notes, task, decision)
        job.add(outcomes, refused, notes)

    @staticmethod
    def _count(
        outcomes: Counter[str],
        refused: list[dict[str, str]],
        notes: list[str],
        task: TaskRecord,
        decision: Decision,
    ) -> None:
        outcomes[decision.effect.value] += 1
        if decision.effect is Effect.REFUSE:
            if len(refused) < LISTED:
                refused.append({"tenantId": task.tenant_id, "code": decision.code,
                                "message": decision.note})  # fmt: skip
        elif decision.note and len(notes) < 5:
            notes.append(decision.note)

    def _whole(self, tasks: list[TaskRecord]) -> dict[str, TaskRecord]:
        """The whole hashes of `tasks` in one pipelined round trip (retry and rollback build
        each one's next run from its stored run, context and config)."""
        records = self.store.get_whole_tasks([t.task_id for t in tasks])
        return {t.task_id: rec for t, rec in zip(tasks, records, strict=True) if rec}


def _add_slice(job: Job, decided: SliceDecided) -> None:
    """Count a slice decided in Redis into its job (a refused task's message: its status)."""
    outcomes: Counter[str] = Counter({e.value: n for e, n in decided.counts.items()})
    refused = [{"tenantId": r.tenant_id, "code": r.code, "message": f"task is {r.status}"}
               for r in decided.refused]  # fmt: skip
    job.add(outcomes, refused, [])


def _release(lock: Lock) -> None:
    try:
        lock.release()
    except LockError:  # expired meanwhile (a very slow slice): the next holder goes on
        log.warning("a plan command's lock expired before its slice was done")


__all__ = ["CANCEL_SLICE", "SLICE", "SYNC_SECONDS", "Job", "PlanCommands"]


def _archived(store: Store, plan_id: str) -> bool:
    """Whether the archive holds the plan (only asked once Redis has no such plan)."""
    from deployer.archive.store import Archive

    try:
        archive = Archive.open_existing(store.settings)
        return archive is not None and archive.plan(plan_id) is not None
    except Exception:  # noqa: BLE001 - an unreachable archive: the plan is simply not found
        return False
