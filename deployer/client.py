"""DeployerClient: enqueue plans and commands by task *name*, read state from Redis.

It imports nothing from `tasks/`: any service with this package (or any Celery client in
another language sending the same JSON; README, "Enqueue from another service") can drive
deployer through the broker. Writes go through the broker (queue `deployer.control`); reads use the
public Redis contracts: hash `deployer:plan:{planId}` and stream `deployer:rejections`.

`execute` is the exception: it runs a command in this process with the workers' code (it
imports `tasks` then), which is how the CLI and the HTTP API answer a command at once.

Answers stay plain JSON dicts (`execute`, `result`, `rejection`): every caller written for
0.1 indexes them, and the field names are the contract. The typed form of each is in
deployer/public.py (`CommandResult.model_validate(answer)`); the reads `plan_view` and
`task_view` return those models directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.utils.saferepr import saferepr

from deployer import brokers
from deployer.lifecycle import PLAN_ENDED, Command
from deployer.redact import redact
from deployer.redis_client import client_for, state_store
from deployer.settings import Settings, get_settings
from deployer.state.plans import Plans
from deployer.state.store import Store

if TYPE_CHECKING:
    from deployer.public import PlanView, TaskView

CONTROL_QUEUE = "deployer.control"
#: The plan statuses `wait` stops at (deployer.lifecycle.PLAN_ENDED, as plain strings).
TERMINAL_PLAN = frozenset(str(s) for s in PLAN_ENDED)
#: Public task names (docs/contracts.md §5).
SUBMIT, PAUSE, RESUME, CANCEL, RETRY, ROLLBACK, APPROVE, PROMOTE, BUDGET = (
    f"deployer.{v}"
    for v in (
        "submit_plan",
        "pause",
        "resume",
        "cancel",
        "retry",
        "rollback",
        "approve",
        "promote",
        "budget",
    )  # fmt: skip
)


@dataclass(frozen=True)
class PlanStatus:
    """A plan as its public hash shows it: status and task counts by status."""

    plan_id: str
    status: str
    total: int
    counts: dict[str, int] = field(default_factory=dict)
    #: The stored plan's digest (deployer.intake.plan_digest); "" for an older plan.
    digest: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_PLAN


@dataclass(frozen=True)
class Rejection:
    """A refused submission from the `deployer:rejections` stream."""

    plan_id: str
    code: str
    message: str
    errors: list[dict[str, str]]
    entry_id: str = ""
    #: How many field errors the plan had; `errors` holds the first ones only.
    error_count: int = 0


def target(plan: str | None = None, tenant: str | None = None) -> dict[str, str]:
    """`{"planId": P}` (every task of the plan), `{"tenantId": T}` (the tenant's latest
    task) or both (exactly that one task)."""
    if plan is None and tenant is None:
        raise ValueError("give a plan, a tenant, or both")
    out: dict[str, str] = {}
    if plan is not None:
        out["planId"] = str(plan)
    if tenant is not None:
        out["tenantId"] = str(tenant)
    return out


def plan_id_of(plan: Mapping[str, Any] | str) -> str:
    data = json.loads(plan) if isinstance(plan, str) else plan
    plan_id = data.get("planId") if isinstance(data, Mapping) else None
    if plan_id is None or isinstance(plan_id, bool):
        raise ValueError("a plan needs a planId")
    return str(plan_id)


class DeployerClient:
    """Send the public tasks and read the public state; one per process is plenty."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.app = Celery("deployer-client", broker=self.settings.broker_url, set_as_current=False)
        self.app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            task_ignore_result=self.settings.result_backend is None,
            broker_connection_retry_on_startup=True,
            # Sentinel's master, TLS, publish retries, result backend (deployer/brokers.py)
            **brokers.celery_conf(self.settings),
        )
        self.redis = client_for(self.settings.state_url)

    # ---- writes (through the broker) ---------------------------------------------------

    def send(self, name: str, *args: Any, **kwargs: Any) -> str:
        """Send task `name` to deployer.control; returns the Celery task id.

        argsrepr/kwargsrepr are redacted here: monitoring shows what the sender wrote.
        """
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        result = self.app.send_task(
            name,
            args=list(args),
            kwargs=kwargs,
            queue=CONTROL_QUEUE,
            argsrepr=saferepr(tuple(redact(list(args))), 1024),
            kwargsrepr=saferepr(redact(kwargs), 1024),
        )
        return str(result.id)

    def submit(self, plan: Mapping[str, Any] | str) -> str:
        """Enqueue a plan (dict or JSON text); returns its plan id. The same plan again is a
        no-op; another plan under a used id is refused PLAN_CONFLICT (`wait_accepted`)."""
        plan_id = plan_id_of(plan)
        self.send(SUBMIT, plan if isinstance(plan, str) else dict(plan))
        return plan_id

    def pause(self, *, plan: str | None = None, tenant: str | None = None,
              by: str | None = None, reason: str | None = None) -> str:  # fmt: skip
        return self.send(PAUSE, target(plan, tenant), by=by, reason=reason)

    def resume(self, *, plan: str | None = None, tenant: str | None = None,
               by: str | None = None, reason: str | None = None, force: bool = False,
               budget: int | str | None = None, reset: bool = False) -> str:  # fmt: skip
        """`force`: apply even where a newer task deployed the tenant since (else SUPERSEDED).
        `budget` / `reset`: change the plan's failure budget first, then resume."""
        return self.send(RESUME, target(plan, tenant), by=by, reason=reason, force=force or None,
                         budget=budget, reset=reset or None)  # fmt: skip

    def cancel(self, *, plan: str | None = None, tenant: str | None = None,
               by: str | None = None, reason: str | None = None) -> str:  # fmt: skip
        return self.send(CANCEL, target(plan, tenant), by=by, reason=reason)

    def retry(self, *, plan: str | None = None, tenant: str | None = None,
              from_checkpoint: bool = False, by: str | None = None,
              force: bool = False) -> str:  # fmt: skip
        return self.send(
            RETRY, target(plan, tenant), from_checkpoint=from_checkpoint, by=by, force=force or None
        )

    def rollback(self, *, plan: str | None = None, tenant: str | None = None,
                 by: str | None = None, reason: str | None = None,
                 force: bool = False) -> str:  # fmt: skip
        """`force`: roll back even a tenant a newer task deployed since (else that task ends
        SUPERSEDED and the newer config stays)."""
        return self.send(ROLLBACK, target(plan, tenant), by=by, reason=reason, force=force or None)

    def approve(self, plan: str, wave: int, *, by: str | None = None,
                reason: str | None = None) -> str:  # fmt: skip
        """Approve wave `wave` of `plan`: refused (WAVE_NOT_AWAITING_APPROVAL) unless it is
        the wave waiting, so a late or repeated approval never approves the next one."""
        return self.send(APPROVE, {"planId": str(plan), "wave": wave}, by=by, reason=reason)

    def promote(self, plan: str, wave: int | None = None, *, all_waves: bool = False,
                approve: bool = False, by: str | None = None,
                reason: str | None = None) -> str:  # fmt: skip
        """Skip the current wave's bake (`wave`: it must be the current one); `all_waves`:
        every remaining wave's; `approve`: approve a wave that waits for it too."""
        where: dict[str, Any] = {"planId": str(plan)}
        if wave is not None:
            where["wave"] = wave
        return self.send(PROMOTE, where, by=by, reason=reason, all=all_waves or None,
                         approve=approve or None)  # fmt: skip

    def budget(self, plan: str, maximum: int | str | None = None, *, reset: bool = False,
               by: str | None = None, reason: str | None = None) -> str:  # fmt: skip
        """Change the plan's failure budget: a new `maximum` (a count or "5%"), and/or
        `reset` (the failures so far no longer count)."""
        return self.send(BUDGET, {"planId": str(plan)}, max=maximum, reset=reset or None,
                         by=by, reason=reason)  # fmt: skip

    def command(self, verb: str, target: dict[str, str], **kwargs: Any) -> str:
        """Any control verb by its short name (`pause`, `retry`, ...)."""
        return self.send(f"deployer.{verb}", target, **kwargs)

    def execute(
        self,
        command: Command | str,
        target: Mapping[str, Any],
        *,
        by: str | None = None,
        reason: str | None = None,
        from_checkpoint: bool = False,
        force: bool = False,
        strict: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        """Run a control verb here and now; its answer `{"ok", "code", "message", ...}`.

        The same code as the verb's control task (tasks.control.run_command), so the answer
        is the one a worker would give, with no worker needed: what the CLI and the HTTP
        API do. It acts on the process's settings (DEPLOYER_*), as a worker does. `target`
        may carry a `wave` (approve, promote); `options`: `all_waves`, `approve` (promote),
        `budget`, `reset` (budget, resume).
        """
        from tasks.control import run_command  # the workers' code, only for this path

        return run_command(
            Command(command),
            dict(target),
            by=by,
            reason=reason,
            from_checkpoint=from_checkpoint,
            force=force,
            strict=strict,
            **options,
        )

    def result(self, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """`{"ok", "code", "message", ...}` of a control task (needs DEPLOYER_RESULT_BACKEND)."""
        if self.settings.result_backend is None:
            raise RuntimeError("no result backend: set DEPLOYER_RESULT_BACKEND or read Redis")
        value = self.app.AsyncResult(task_id).get(timeout=timeout)
        return dict(value)

    # ---- reads (public Redis contracts) ------------------------------------------------

    @cached_property
    def store(self) -> Store:
        """The state store (task hashes, indexes, events) for reads the public hashes lack."""
        return state_store(self.settings)

    @cached_property
    def plans(self) -> Plans:
        """Reads of the public plan hash and the rejections stream."""
        return Plans(self.redis)

    def plan_status(self, plan_id: str) -> str | None:
        """Field `status` of hash deployer:plan:{planId}; None until the plan is accepted."""
        return self.plans.status(plan_id)

    def status(self, plan_id: str) -> PlanStatus | None:
        plan = self.plans.get(plan_id)
        if plan is None:
            return None
        counts = {s.value: n for s, n in plan.counts.items()}
        return PlanStatus(plan_id, plan.status, plan.total or 0, counts, plan.digest)

    def plan_view(self, plan_id: str, sample: int = 20) -> PlanView | None:
        """The plan as `deployer status P --json` and `GET /api/v1/plans/{planId}` show it,
        typed (deployer/public.py); None if unknown. `.model_dump(by_alias=True,
        exclude_unset=True)` gives back exactly that JSON."""
        from deployer import views
        from deployer.public import PlanView

        view = views.plan_view(self.store, plan_id, sample)
        return PlanView.model_validate(view) if view is not None else None

    def task_view(self, tenant_id: str, plan_id: str | None = None) -> TaskView | None:
        """The tenant's latest task (or its task in `plan_id`) as `deployer task --json`
        shows it, typed; None if there is none."""
        from deployer import views
        from deployer.public import TaskView

        s = self.store
        view = (views.plan_task_view(s, plan_id, tenant_id) if plan_id
                else views.latest_task_view(s, tenant_id))  # fmt: skip
        return TaskView.model_validate(view) if view is not None else None

    def rejection(self, plan_id: str, since: str = "0-0") -> dict[str, str] | None:
        """The newest record of `plan_id` in the public rejections stream, if any."""
        return self.plans.rejection(plan_id, since)

    @staticmethod
    def digest(plan: Mapping[str, Any] | str) -> str | None:
        """The digest a worker stores for `plan` (deployer.intake.plan_digest), or None when
        the plan is invalid here; pass it to `wait_accepted` to tell a reused planId."""
        from deployer.errors import PlanValidationError
        from deployer.intake import config_json, plan_digest, validate_plan

        try:
            head, configs = validate_plan(plan, get_settings(), config_json)
        except PlanValidationError:
            return None
        return plan_digest(head, configs)

    def wait_accepted(
        self,
        plan_id: str,
        since: str = "0-0",
        timeout: float = 30.0,
        poll: float = 0.1,
        digest: str | None = None,
    ) -> PlanStatus | Rejection | None:
        """Until the plan is accepted (its hash exists) or rejected; None at the timeout.

        With `digest` (`DeployerClient.digest(plan)` of what was sent), a plan hash holding
        another plan's digest is not an acceptance: that submit is refused (PLAN_CONFLICT)
        and its rejection, newer than `since`, is what comes back. An identical plan that
        existed already comes back as its PlanStatus (the resubmit was a no-op).
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(plan_id)
            if status is not None and (not digest or status.digest in ("", digest)):
                return status
            found = self.rejection(plan_id, since)
            if found is not None:
                return Rejection(
                    plan_id,
                    found.get("code", ""),
                    found.get("message", ""),
                    json.loads(found.get("errors") or "[]"),
                    found.get("id", ""),
                    int(found.get("errorCount") or 0),
                )
            if time.monotonic() >= deadline:
                return None
            time.sleep(poll)

    def wait(
        self,
        plan_id: str,
        timeout: float = 600.0,
        poll: float = 0.2,
        until: frozenset[str] = TERMINAL_PLAN,
    ) -> str | None:
        """Poll the plan's status until it is in `until` (default: terminal) or time runs out.

        Returns the last status seen (None: never accepted), so a caller compares it.
        """
        deadline = time.monotonic() + timeout
        status = self.plan_status(plan_id)
        while status not in until and time.monotonic() < deadline:
            time.sleep(poll)
            status = self.plan_status(plan_id)
        return status
