"""Live progress of a plan for people: counts by status, active tenants, ETA.

Reads only the plan hash (counters kept by the store) and at most a handful of task
hashes per refresh, so it stays cheap on a plan of 10,000 tenants.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table

from deployer.cli.app import console, err
from deployer.lifecycle import ENDED, PLAN_ENDED
from deployer.models import TaskStatus
from deployer.state.plans import PlanRecord, Plans
from deployer.state.record import Field as F
from deployer.state.record import TaskRecord
from deployer.state.store import Store

ACTIVE_ROWS = 12


def counts(plan: PlanRecord) -> dict[str, int]:
    """Tasks per status, every status (0 for none), in TaskStatus order."""
    return {s.value: plan.count(s) for s in TaskStatus}


def _plan(store: Store, plan_id: str) -> PlanRecord:
    """The plan as stored (an empty record while it does not exist)."""
    return Plans.of(store).get(plan_id) or PlanRecord()


ACTIVE_FIELDS = (F.TENANT_ID, F.STATUS, F.STAGE_NAME, F.STAGE_INDEX, F.TOTAL_STAGES, F.PROGRESS)
FAILED_FIELDS = (F.TENANT_ID, F.STATUS, F.FAILED_STAGE, F.LAST_ERROR)
RUNNING = {TaskStatus.RUNNING, TaskStatus.ROLLING_BACK}
FAILED = {TaskStatus.FAILED, TaskStatus.ROLLBACK_FAILED}
#: Task hashes read per round trip when a plan's tasks are scanned (failures, leftovers).
SCAN_CHUNK = 1000


def active_tasks(store: Store, plan_id: str, limit: int = ACTIVE_ROWS) -> list[TaskRecord]:
    ids = Plans.of(store).in_flight_task_ids(plan_id)
    return store.get_tasks(ids[:limit], ACTIVE_FIELDS)


def scan_tasks(
    store: Store, plan_id: str, statuses: set[TaskStatus], fields: tuple[F, ...], limit: int
) -> list[TaskRecord]:
    """The first `limit` tasks of the plan (submission order) in one of `statuses`, read
    SCAN_CHUNK task hashes per round trip and stopping as soon as `limit` are found."""
    found: list[TaskRecord] = []
    start = 0
    while len(found) < limit:
        ids = store.plan_task_ids(plan_id, start, start + SCAN_CHUNK - 1)
        if not ids:
            break
        rows = store.get_tasks(ids, (F.STATUS, *fields))
        found += [row for row in rows if row.status in statuses][: limit - len(found)]
        start += SCAN_CHUNK
    return found


def _stage(t: TaskRecord) -> str:
    return f"{t.stage_name or '-'} ({(t.stage_index or 0) + 1}/{t.total_stages})"


def report_failures(store: Store, plan_id: str, limit: int = 10) -> list[dict[str, Any]]:
    """Name the plan's failed tenants and their errors (the first `limit`, then a count),
    so an operator knows what to look at without another command. Returns those shown."""
    c = counts(_plan(store, plan_id))
    total = c["FAILED"] + c["ROLLBACK_FAILED"]
    if not total:
        return []
    failed = scan_tasks(store, plan_id, FAILED, FAILED_FIELDS, limit)
    err.print(f"[bold red]{total} task(s) failed[/] in plan {plan_id}:", soft_wrap=True)
    for t in failed:
        where = f" at {t.failed_stage}" if t.failed_stage else ""
        err.print(f"  {t.tenant_id} {t.status}{where}: {t.last_error or '(no error)'}",
                  highlight=False, soft_wrap=True)  # fmt: skip
    if total > len(failed):
        more = total - len(failed)
        err.print(f"  ... and {more} more (deployer status {plan_id})", soft_wrap=True)
    return [t.stored((F.STATUS, *FAILED_FIELDS)) for t in failed]


def report_unfinished(
    store: Store, plan_id: str, timeout: float | None, limit: int = 10
) -> list[dict[str, Any]]:
    """After --timeout: what is still running (tenant, stage, progress) and what waits."""
    plan = _plan(store, plan_id)
    c = counts(plan)
    waiting = {s: c[s] for s in ("RUNNING", "ROLLING_BACK", "PENDING", "PAUSED") if c[s]}
    err.print(
        f"[yellow]timeout[/]: plan {plan_id} still {plan.status or '?'} after {timeout}s: "
        + ", ".join(f"{n} {s}" for s, n in waiting.items()),
        highlight=False,
        soft_wrap=True,
    )
    active = scan_tasks(store, plan_id, RUNNING, ACTIVE_FIELDS, limit)
    for t in active:
        err.print(f"  {t.tenant_id} {t.status} {_stage(t)} {t.progress}".rstrip(),
                  highlight=False, soft_wrap=True)  # fmt: skip
    running = c["RUNNING"] + c["ROLLING_BACK"]
    if running > len(active):
        err.print(f"  ... and {running - len(active)} more running")
    return [t.stored((F.STATUS, *ACTIVE_FIELDS)) for t in active]


def render(store: Store, plan_id: str, started: float) -> tuple[Group, str | None]:
    plan = _plan(store, plan_id)
    status = plan.status or None
    c = counts(plan)
    total = plan.total or 0
    done = sum(c.get(s, 0) for s in ENDED)
    elapsed = time.monotonic() - started
    eta = ""
    if 0 < done < total and elapsed > 1:
        eta = f" · ETA {max(0.0, (total - done) * elapsed / done):.0f}s"
    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"[bold]plan[/] {plan_id}",
        f"[bold]{status or '?'}[/]",
        f"{done}/{total} done",
        f"{elapsed:.1f}s{eta}",
    )
    summary = Table(show_header=True, header_style="bold", box=None)
    for s, n in c.items():
        if n:
            summary.add_column(s)
    summary.add_row(*[str(n) for n in c.values() if n])
    active = Table(show_header=True, header_style="dim", box=None)
    for col in ("tenant", "status", "stage", "progress"):
        active.add_column(col)
    for t in active_tasks(store, plan_id):
        active.add_row(t.tenant_id or "?", t.status or "?", _stage(t), t.progress)
    return Group(head, summary, active), status


def follow(store: Store, plan_id: str, timeout: float | None, quiet: bool = False) -> str | None:
    """Show live progress until the plan is terminal; returns the final status (None: timeout)."""
    started = time.monotonic()
    deadline = started + timeout if timeout else None
    view, status = render(store, plan_id, started)
    with Live(
        view,
        console=console,
        refresh_per_second=4,
        transient=False,
        auto_refresh=False,
        redirect_stdout=False,
    ) as live:
        while status not in PLAN_ENDED:
            if deadline and time.monotonic() > deadline:
                return None
            time.sleep(0.25)
            view, status = render(store, plan_id, started)
            if not quiet:
                live.update(view, refresh=True)
        live.update(view, refresh=True)
    return status
