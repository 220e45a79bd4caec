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

from deployer import keys
from deployer.cli.app import console
from deployer.models import TaskStatus, task_id_for
from deployer.store import Store

TERMINAL_PLAN = {"COMPLETED", "FAILED", "CANCELLED", "ROLLED_BACK"}
ACTIVE_ROWS = 12


def counts(plan: dict[str, str]) -> dict[str, int]:
    return {s.value: int(plan.get(f"c:{s.value}", 0) or 0) for s in TaskStatus}


def active_tasks(store: Store, plan_id: str, limit: int = ACTIVE_ROWS) -> list[dict[str, Any]]:
    prefix = task_id_for(plan_id, "")
    ids = [str(m) for m in store.r.zrange(keys.INFLIGHT, 0, 5000) if str(m).startswith(prefix)]
    fields = ["tenantId", "status", "stageName", "stageIndex", "totalStages", "progress"]
    return store.get_tasks_raw(ids[:limit], fields)


def render(store: Store, plan_id: str, started: float) -> tuple[Group, str | None]:
    plan = store.get_plan(plan_id)
    status = plan.get("status")
    c = counts(plan)
    total = int(plan.get("total", 0) or 0)
    done = c["COMPLETED"] + c["FAILED"] + c["CANCELLED"] + c["ROLLED_BACK"] + c["ROLLBACK_FAILED"]
    done += c["SUPERSEDED"]
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
        stage = f"{t['stageName'] or '-'} ({int(t['stageIndex'] or 0) + 1}/{t['totalStages']})"
        active.add_row(t["tenantId"] or "?", t["status"] or "?", stage, t.get("progress") or "")
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
        while status not in TERMINAL_PLAN:
            if deadline and time.monotonic() > deadline:
                return None
            time.sleep(0.25)
            view, status = render(store, plan_id, started)
            if not quiet:
                live.update(view, refresh=True)
        live.update(view, refresh=True)
    return status
