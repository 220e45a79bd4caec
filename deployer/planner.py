"""The producer: persist a validated plan, prepare runs (create, retry, rollback), send them.

A plan's waves after submit belong to the rollout service (deployer/rollout.py): the planner
hands it every "the wave step is due" its fills report, and it calls back `fill_all` to send
a wave it started.

Validation at the edge is `deployer.intake`. Create, retry and rollback all end in a `Run`
(stage specs + a TaskRuntimeContext) that the one stage task executes; only where the config
and the context come from differs (docs/contracts.md §4). Sending is injected (`Sender`) so
this module never imports Celery.

A submitted plan is validated whole (every tenant's stages are built once and thrown away,
`intake.task_row`) but stored as configs only; a task's first run is built when a
concurrency slot sends it (`Planner.launch`). A 10,000-tenant plan with a cap of 500 so
pays for 500 runs up front, not 10,000, in time and in the submitting worker's memory.
"""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from deployer import tracing
from deployer.context import Run, TaskRuntimeContext, Unrestored
from deployer.errors import (
    Code,
    NoPreviousConfig,
    PermanentError,
    PlanConflict,
    PlanValidationError,
    RollbackIncomplete,
    code_of,
)
from deployer.intake import plan_digest, preflight, task_row_and_services, validate_plan
from deployer.models import RunKind, StageSpec, TenantConfig, tenant_of_task
from deployer.rollout import RolloutService
from deployer.settings import Settings
from deployer.state.record import Field, TaskRecord
from deployer.state.store import Dispatch, Slot, Store, TaskRow
from deployer.waves import wave_plan
from stages import registry
from stages.base import ConfigError
from stages.discovery import Resolver
from stages.factory import build_stages, forward_stages

log = logging.getLogger("deployer.planner")

#: Sends chains; may return the dispatches it could not send, each with the reason, so the
#: caller fails those tasks instead of losing the whole batch (None: all sent).
Sender = Callable[[list[Dispatch]], "list[tuple[Dispatch, str]] | None"]
#: Tasks given a slot per fill round trip, then built, stored and sent together.
DISPATCH_BATCH = 500
#: The first fill of a dispatch is this small: its chains reach the queue, and every worker
#: process, after ~30 ms of building and sending instead of the ~0.4 s a whole batch takes
#: (a plan's first stages waited for it while the other processes idled).
FIRST_DISPATCH_BATCH = 32


def _batches() -> Iterator[int]:
    """The size of each fill of one dispatch: a small first one, then DISPATCH_BATCH."""
    yield FIRST_DISPATCH_BATCH
    while True:
        yield DISPATCH_BATCH


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a plan is turned into records and messages.

    A 10,000-tenant plan allocates ~10^5 short-lived, acyclic objects (pydantic models,
    dicts, JSON strings); the collector ran through all of them several times over, ≈ 30 %
    of the submit. Reference counting still frees everything; the collector resumes after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def initial_context(
    plan_id: str,
    task_id: str,
    config: TenantConfig,
    kind: RunKind,
    run_id: str,
    stage_count: int = 0,
) -> TaskRuntimeContext:
    """Created with the run: planVersion travels in additionalData, so every stage of the
    chain writes and verifies the same version (docs/contracts.md §4)."""
    return TaskRuntimeContext.start(
        plan_id, task_id, config.tenant_id, run_id, kind, config.plan_version, stage_count
    )


def forward_run(
    plan_id: str,
    task_id: str,
    config: TenantConfig,
    run_id: str,
    settings: Settings,
    wave: int | None = None,
) -> Run:
    """A task's first run, from the caller's config (built when the task is first sent);
    with tracing on, its context carries the run's new trace (deployer/tracing.py)."""
    stages = forward_stages(config, settings)
    ctx = initial_context(plan_id, task_id, config, RunKind.FORWARD, run_id, len(stages))
    ctx = tracing.start_run(ctx, wave)
    return Run(run_id=run_id, kind=RunKind.FORWARD, stages=stages, context=ctx)


@dataclass
class Planner:
    """Application service: turns requests into persisted state plus chains sent."""

    store: Store
    settings: Settings
    send: Sender
    #: Where a submit checks that every service its plan uses has an instance (preflight);
    #: None skips the check (the worker passes its step environment's resolver).
    resolver: Resolver | None = None
    #: The plan's waves after submit (its `rollback` is injected by the controller).
    rollout: RolloutService = field(init=False)

    def __post_init__(self) -> None:
        self.rollout = RolloutService(self.store, self.settings, self.fill_all)

    def submit(self, payload: Any) -> dict[str, Any]:
        """Validate the whole plan, store it in one round trip, send its first wave."""
        with gc_paused():
            return self._submit(payload)

    def _submit(self, payload: Any) -> dict[str, Any]:
        # (service, namespace) -> the first tenant using it: one lookup each at preflight
        services: dict[tuple[str, str | None], int] = {}
        kept = 0

        def keep(config: TenantConfig) -> TaskRow:
            nonlocal kept
            row, names = task_row_and_services(config, self.settings)
            for name in names:
                services.setdefault((name, config.nacos_name_space), kept)
            kept += 1
            return row

        try:
            head, rows = validate_plan(payload, self.settings, keep)
            digest = plan_digest(head, (row.config_json for row in rows))
            # an existing plan is answered as such (duplicate or conflict) whatever the fleet
            if self.resolver is not None and self.store.plan_digest(head.plan_id) is None:
                preflight(head.plan_id, services, self.resolver)
        except PlanValidationError as exc:
            return self.refuse(exc)
        concurrency = head.max_concurrency or self.settings.max_concurrency
        waves = (
            wave_plan(head.plan_id, [row.tenant_id for row in rows], head.strategy, self.settings)
            if head.strategy
            else None
        )
        run_prefix = new_run_id() + "-"
        if not self.store.create_plan(head.plan_id, rows, concurrency, run_prefix, digest, waves):
            return self._already(head.plan_id, digest)
        self.dispatch(head.plan_id)
        answer: dict[str, Any] = {
            "ok": True,
            "code": Code.ACCEPTED,
            "message": f"plan {head.plan_id} accepted with {len(rows)} task(s)",
            "planId": head.plan_id,
            "tasks": len(rows),
        }
        if waves:
            answer["waves"] = int(waves.fields["waves"])
        return answer

    def refuse(self, exc: PlanValidationError) -> dict[str, Any]:
        """Record and answer an invalid plan (also one refused before it reached `submit`:
        the HTTP API measures a body while it reads it)."""
        return self._refuse(exc.plan_id, exc, exc.errors, exc.error_count)

    def _refuse(
        self,
        plan_id: str | None,
        exc: PermanentError,
        errors: list[dict[str, str]],
        error_count: int | None = None,
    ) -> dict[str, Any]:
        """Record a refused submit in `deployer:rejections` (under whatever planId could be
        read) and answer it."""
        self.store.reject(plan_id, errors, exc.message, exc.code, error_count)
        log.warning("plan %s refused (%s): %s", plan_id, exc.code, errors[:5])
        return {**exc.as_result(), "errors": errors, "planId": plan_id}

    def _already(self, plan_id: str, digest: str) -> dict[str, Any]:
        """Same planId again. With the same body (digest): nothing changes, except that free
        slots are filled; a submit redelivered after its worker died between writing the
        plan and sending the first chains then finishes the job instead of leaving the plan
        waiting. With another body: refused, PLAN_CONFLICT. A plan stored before digests
        were kept cannot be compared and counts as the same."""
        stored = self.store.plan_digest(plan_id)
        if stored and stored != digest:
            conflict = PlanConflict(
                f"plan {plan_id} exists with another body; submit it under a new planId"
            )
            errors = [{"field": "planId", "reason": f"{plan_id} is taken by another plan"}]
            return self._refuse(plan_id, conflict, errors)
        self.dispatch(plan_id)
        return {
            "ok": True,
            "code": Code.ALREADY_SUBMITTED,
            "message": f"plan {plan_id} exists with this body; nothing changed",
            "planId": plan_id,
            "duplicate": True,
        }

    def dispatch(self, plan_id: str) -> int:
        """Fill the plan's free slots and send those chains, a batch at a time.

        Batches bound what a process holds at once: an uncapped 10,000-tenant plan is
        20 fills of 500, each built, stored and sent before the next, not 10,000 runs and
        messages in memory together (that process peaked at 200 MB).
        """
        sent = 0
        for batch in _batches():
            slots, due = self.store.fill_due(plan_id, max_batch=batch)
            sent += len(self.launch(slots))
            if due:
                # its fill said the plan's wave step is due (a wave just ended): take it
                # (deployer/rollout.py), which fills the slots of a wave it started
                self.rollout.advance(plan_id)
            if len(slots) < batch:
                break
        return sent

    def fill_all(self, plan_id: str) -> None:
        """Fill every free slot of the plan and send those chains (a wave just started)."""
        for batch in _batches():
            slots = self.store.fill(plan_id, max_batch=batch)
            self.launch(slots)
            if len(slots) < batch:
                return

    def launch(self, slots: list[Slot]) -> list[Dispatch]:
        """Send the chains of tasks given a slot (or re-driven); returns what was sent.

        A task sent for the first time gets its run built here from its stored config, and
        stored before its chain leaves (one round trip for the batch), so retry, rollback and
        the reconciler find the stages it actually ran. A slot whose record cannot be read or
        built fails its task with the reason instead of stopping the batch.
        """
        ready: list[Dispatch] = []
        built: list[Run] = []
        waves = self._waves(slots) if tracing.enabled() else {}
        for slot in slots:
            try:
                if slot.run_json:
                    run = Run.model_validate_json(slot.run_json)
                    ctx = (
                        TaskRuntimeContext.from_json(slot.ctx_json)
                        if slot.ctx_json
                        else run.context
                    )
                else:
                    run = self._first_run(slot, waves.get(slot.task_id))
                    built.append(run)
                    ctx = run.context
                if not 0 <= ctx.stage_index < len(run.stages):
                    raise ValueError(
                        f"stored context points at stage {ctx.stage_index} "
                        f"of a run with {len(run.stages)}"
                    )
            except (ValueError, ConfigError) as exc:
                self._unlaunchable(slot, exc)
                continue
            except Exception as exc:  # one unreadable record never stops the batch
                log.exception("task %s: unexpected error preparing its run", slot.task_id)
                self._unlaunchable(slot, exc)
                continue
            ready.append(Dispatch(slot.task_id, slot.token, run, ctx.with_token(slot.token)))
        if built:
            self.store.attach_runs(built)
        if ready:
            unsent = self.send(ready) or []
            for d, reason in unsent:
                slot = Slot(d.task_id, d.context.plan_id, d.token, d.run.run_id, "", "", "")
                self._unlaunchable(slot, RuntimeError(reason))
            if unsent:
                failed = {id(d) for d, _ in unsent}
                ready = [d for d in ready if id(d) not in failed]
        return ready

    def _first_run(self, slot: Slot, wave: int | None = None) -> Run:
        config = TenantConfig.model_validate_json(slot.config_json)
        return forward_run(slot.plan_id, slot.task_id, config, slot.run_id, self.settings, wave)

    def _waves(self, slots: list[Slot]) -> dict[str, int]:
        """The wave of each task sent for the first time (its trace's attribute): one read
        for the batch, made only when tracing is on."""
        ids = [s.task_id for s in slots if not s.run_json]
        rows = self.store.get_tasks(ids, (Field.WAVE,)) if ids else []
        return {i: row.wave for i, row in zip(ids, rows, strict=True) if row.wave is not None}

    def stored_run(self, task: TaskRecord) -> Run:
        """A task's stored run; for a task whose first dispatch never stored one (its
        dispatcher died in between), the run that dispatch would have built."""
        run = task.run_model()
        if run is not None:
            return run
        config = task.tenant_config()
        return forward_run(task.plan_id, task.task_id, config, task.run_id, self.settings)

    def _unlaunchable(self, slot: Slot, exc: Exception) -> None:
        reason = f"cannot prepare the run: {exc}"
        log.error("task %s: %s", slot.task_id, reason)
        # The stored tenant, so the failure is checked against the task it belongs to.
        stored = self.store.get_tasks([slot.task_id], (Field.TENANT_ID,))[0].tenant_id
        tenant_id = stored or tenant_of_task(slot.task_id)
        ctx = TaskRuntimeContext(
            plan_id=slot.plan_id,
            task_id=slot.task_id,
            tenant_id=tenant_id,
            run_id=slot.run_id,
            token=slot.token,
        )
        self.store.fail(ctx, "", reason, code_of(exc, Code.RUN_UNPREPARABLE))


def written_fields(stages: list[StageSpec]) -> set[str]:
    """The service fields these stages write into the tenant's hash (each step says)."""
    return {
        field
        for stage in stages
        for spec in stage.steps
        for field in registry.step(spec.type).writes(spec)
    }


def prepare_retry(
    run: Run,
    checkpoint_ctx: TaskRuntimeContext,
    checkpoint: int,
    from_checkpoint: bool,
    wave: int | None = None,
) -> Run:
    """The task's last run again, same stages and context, per-step scratch cleared.

    From the checkpoint it starts after the last completed stage; otherwise at stage 0.
    With tracing on it is a new trace (a retry is a run of its own).
    """
    base = checkpoint_ctx if from_checkpoint else run.context
    ctx = tracing.start_run(base.for_retry(checkpoint + 1 if from_checkpoint else 0), wave)
    return run.model_copy(update={"context": ctx, "start_index": ctx.stage_index})


def prepare_rollback(
    task: TaskRecord, previous_run: Run, settings: Settings, *, strict: bool = False
) -> Run:
    """The snapshot becomes the config, the same factory builds the stages,
    and a fresh context carries the old planVersion. Fields the old config does not
    produce are deleted by its first write, in the same transaction (the first step that
    can delete fields: `Step.deleting`).

    The services the forward run changed that the rollback cannot restore are named in the
    run (`unrestored`, `unrestorable`); with `strict` such a rollback is refused instead
    (ROLLBACK_INCOMPLETE).
    """
    config = task.tenant_config()
    previous = config.previous_config
    if previous is None:
        raise NoPreviousConfig(f"task {task.task_id} has no previous config snapshot")
    # The snapshot rarely names its services; the rollback then covers what the forward
    # run covered, rather than every service the old config could have produced.
    old = previous.model_copy(
        update={
            "tenant_id": task.tenant_id,
            "service_names": previous.service_names or config.service_names,
        }
    )
    stages = build_stages(old, config, settings)
    stale = sorted(written_fields(previous_run.stages) - written_fields(stages))
    if stale:
        _delete_on_first_write(stages, stale)
    unrestored = unrestorable(previous_run.stages, stages, old)
    if unrestored and strict:
        lines = "; ".join(f"{u.service}: {u.reason}" for u in unrestored)
        raise RollbackIncomplete(
            f"task {task.task_id}: the rollback cannot restore {lines} (refused: strict)",
            unrestored=[u.wire() for u in unrestored],
        )
    run_id = new_run_id()
    ctx = initial_context(task.plan_id, task.task_id, old, RunKind.ROLLBACK, run_id, len(stages))
    ctx = tracing.start_run(ctx, task.wave)
    return Run(
        run_id=run_id, kind=RunKind.ROLLBACK, stages=stages, context=ctx, unrestored=unrestored
    )


def unrestorable(
    forward: list[StageSpec], rollback: list[StageSpec], old: TenantConfig
) -> list[Unrestored]:
    """The services the forward run changed that this rollback leaves as they are: it has no
    stage for them (its config lacks what their stage needs, or its serviceNames leave them
    out), and deleting the fields it does not produce does not undo them either (a service
    called over HTTP, e.g. asbc-gateway's traffic switch, writes no field). Each with why."""
    covered = {stage.service for stage in rollback}
    deleted = written_fields(forward) - written_fields(rollback)
    by_service = {a.service: a for a in registry.assemblers()}
    out: list[Unrestored] = []
    for stage in forward:
        if stage.service in covered or stage.service in {u.service for u in out}:
            continue
        writes = written_fields([stage])
        if writes and writes <= deleted:
            continue  # its fields are deleted: the service reads the old (no) config again
        assembler = by_service.get(stage.service)
        if old.service_names is not None and stage.service not in old.service_names:
            why = "the previous config's serviceNames leave it out"
        elif assembler is not None:
            why = f"the previous config has no {assembler.missing(old)}"
        else:
            why = "no installed assembler builds its stage"
        undone = (
            f"fields {sorted(writes - deleted)} keep the forward run's values"
            if writes
            else "what the forward run applied there stays"
        )
        out.append(Unrestored(service=stage.service, reason=f"{why}; {undone}"))
    return out


def _delete_on_first_write(stages: list[StageSpec], fields: list[str]) -> None:
    """The first step of these stages that can delete hash fields deletes `fields`."""
    for stage in stages:
        for i, spec in enumerate(stage.steps):
            deleting = registry.step(spec.type).deleting(spec, fields)
            if deleting is not None:
                stage.steps[i] = deleting
                return
