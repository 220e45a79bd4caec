"""Control verbs: pause, resume, cancel, retry, rollback (tenant or plan), and events."""

from __future__ import annotations

import getpass
import json
import socket
import time
from typing import Annotated, Any

import typer

from deployer import keys
from deployer.cli.app import Exit, app, console, err, print_json, refuse
from deployer.cli.plans import JsonOpt, TimeoutOpt, exit_for_plan, store
from deployer.cli.progress import follow
from deployer.errors import DeployerError
from deployer.lifecycle import Command

PlanOpt = Annotated[str | None, typer.Option("--plan", help="Every task of this plan.")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="This tenant's latest task.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who asks (recorded in events).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (recorded in events).")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Follow until the run ends.")]

TASK_END = {
    Command.RETRY: ({"COMPLETED"}, {"FAILED", "CANCELLED", "ROLLBACK_FAILED", "ROLLED_BACK"}),
    Command.ROLLBACK: ({"ROLLED_BACK"}, {"ROLLBACK_FAILED", "CANCELLED", "FAILED", "COMPLETED"}),
}


def _target(plan: str | None, tenant: str | None, as_json: bool) -> dict[str, str]:
    if bool(plan) == bool(tenant):
        refuse("TARGET_INVALID", "give exactly one of --plan or --tenant", as_json=as_json)
    return {"planId": plan} if plan else {"tenantId": tenant}  # type: ignore[dict-item]


def _run(
    command: Command,
    target: dict[str, str],
    by: str | None,
    reason: str | None,
    as_json: bool,
    **kw: Any,
) -> dict[str, Any]:
    from tasks.runtime import controller  # the CLI acts directly, with the workers' code

    who = by or f"{getpass.getuser()}@{socket.gethostname()}"
    try:
        result = controller().execute(command, target, by=who, reason=reason, **kw)
    except DeployerError as exc:
        result = exc.as_result()
    if not result["ok"]:
        refuse(result["code"], result.get("message", ""), as_json=as_json)
    if as_json:
        print_json(result)
    else:
        note = "[yellow]already in effect[/] " if result["code"] == "ALREADY" else ""
        console.print(f"{note}{result['message']}")
        for skipped in result.get("skipped", [])[:10]:
            console.print(f"  skipped {skipped['tenantId']}: {skipped['code']}")
    return result


def _wait_task(tenant: str, command: Command, timeout: float | None) -> Exit:
    s = store()
    good, bad = TASK_END[command]
    deadline = time.monotonic() + timeout if timeout else None
    status = ""
    with console.status(f"waiting for tenant {tenant}") as spinner:
        while True:
            task_id = s.task_id_for_tenant(tenant) or ""
            raw = s.get_tasks_raw([task_id], ["status", "stageName", "progress"])[0]
            status = raw["status"] or ""
            spinner.update(
                f"tenant {tenant}: {status} {raw['stageName'] or ''} {raw['progress'] or ''}"
            )
            if status in good or status in bad:
                break
            if deadline and time.monotonic() > deadline:
                return Exit.TIMEOUT
            time.sleep(0.2)
    console.print(f"tenant {tenant}: {status}")
    return Exit.OK if status in good else Exit.ENDED_OTHERWISE


def _simple(
    command: Command,
    plan: str | None,
    tenant: str | None,
    by: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    _run(command, _target(plan, tenant, as_json), by, reason, as_json)


def _simple_verb(command: Command, doc: str) -> None:
    """pause, resume and cancel share their options; each is registered from here."""

    def verb(
        plan: PlanOpt = None,
        tenant: TenantOpt = None,
        by: ByOpt = None,
        reason: ReasonOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        _simple(command, plan, tenant, by, reason, as_json)

    verb.__doc__ = doc
    app.command(name=command.value)(verb)


_simple_verb(
    Command.PAUSE, "Pause at the next stage start or HealthCheck poll (waiting tasks at once)."
)
_simple_verb(
    Command.RESUME, "Continue paused tasks where they stopped, without redoing completed stages."
)
_simple_verb(
    Command.CANCEL, "Stop tasks for good (running ones at their next stage start or poll)."
)


@app.command()
def approve(
    plan: Annotated[str, typer.Option("--plan", help="The plan whose wave waits.")],
    by: ByOpt = None,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start the plan's wave that waits for approval (strategy approval first/every)."""
    _run(Command.APPROVE, {"planId": plan}, by, reason, as_json)


@app.command()
def retry(
    plan: PlanOpt = None,
    tenant: TenantOpt = None,
    from_checkpoint: Annotated[
        bool, typer.Option("--from-checkpoint", help="Skip the stages already completed.")
    ] = False,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
    by: ByOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-run the last run of FAILED tasks (same stages, same context, scratch cleared)."""
    target = _target(plan, tenant, as_json)
    _run(Command.RETRY, target, by, None, as_json, from_checkpoint=from_checkpoint)
    _finish(Command.RETRY, plan, tenant, wait, timeout, "COMPLETED")


@app.command()
def rollback(
    plan: PlanOpt = None,
    tenant: TenantOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
    by: ByOpt = None,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy each task's previous config snapshot again, through a new chain."""
    target = _target(plan, tenant, as_json)
    _run(Command.ROLLBACK, target, by, reason, as_json)
    _finish(Command.ROLLBACK, plan, tenant, wait, timeout, "ROLLED_BACK")


def _finish(
    command: Command,
    plan: str | None,
    tenant: str | None,
    wait: bool,
    timeout: float | None,
    success: str,
) -> None:
    if not wait:
        raise typer.Exit(Exit.OK)
    if tenant:
        raise typer.Exit(_wait_task(tenant, command, timeout))
    assert plan is not None
    final = follow(store(), plan, timeout)
    if final is None:
        err.print(f"plan {plan} still running after {timeout}s")
    raise typer.Exit(exit_for_plan(final, success))


@app.command()
def events(
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    plan: PlanOpt = None,
    tenant: TenantOpt = None,
    count: Annotated[int, typer.Option("--count", "-n", help="How many recent events.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Recent events (transitions, stage starts and ends), optionally following."""
    r = store().r

    def keep(fields: dict[str, str]) -> bool:
        return (not plan or fields.get("planId") == plan) and (
            not tenant or fields.get("tenantId") == tenant
        )

    def show(entry_id: str, fields: dict[str, str]) -> None:
        if as_json:
            console.print(json.dumps({"id": entry_id, **fields}), soft_wrap=True)
            return
        ts = time.strftime("%H:%M:%S", time.localtime(int(fields.get("ts", "0")) / 1000))
        rest = " ".join(
            f"{k}={v}" for k, v in fields.items() if k not in ("type", "ts") and v not in ("", None)
        )
        console.print(f"{ts} [bold]{fields.get('type', '?')}[/] {rest}", soft_wrap=True)

    recent: list[tuple[str, dict[str, str]]] = r.xrevrange(keys.EVENTS, count=max(count, 1) * 20)  # type: ignore[assignment]
    selected = [e for e in recent if keep(e[1])][:count]
    last = recent[0][0] if recent else "$"
    for entry_id, fields in reversed(selected):
        show(entry_id, fields)
    while follow_:
        batch: Any = r.xread({keys.EVENTS: last}, block=1000, count=500)
        for _stream, entries in batch or []:
            for entry_id, fields in entries:
                last = entry_id
                if keep(fields):
                    show(entry_id, fields)
