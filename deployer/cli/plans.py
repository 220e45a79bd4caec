"""Plan verbs: submit, status, task, schema."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deployer.cli.app import (
    Exit,
    app,
    archive,
    client,
    console,
    err,
    print_json,
    read_plan_file,
    refuse,
    store,
)
from deployer.errors import Code, PlanValidationError

# A command imports what it uses when it runs (`deployer status` must not pay for the
# intake, the stage factory or Celery): only typer and the shared CLI pieces load here.
if TYPE_CHECKING:
    from deployer.client import DeployerClient
    from deployer.state.store import Store

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="Give up waiting after S seconds (exit 3).")
]


def exit_for_plan(status: str | None, success: str = "COMPLETED") -> Exit:
    if status is None:
        return Exit.TIMEOUT
    return Exit.OK if status == success else Exit.ENDED_OTHERWISE


@app.command()
def schema() -> None:
    """Print the JSON Schema of a plan (camelCase, as other services send it)."""
    from deployer.intake import plan_schema
    from deployer.settings import get_settings

    print_json(plan_schema(get_settings()))


@app.command()
def submit(
    plan_file: Annotated[Path, typer.Argument(help="Plan JSON file ('-' for stdin).")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow progress until done.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and show stages only.")
    ] = False,
    timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate a plan locally, enqueue it (deployer.submit_plan), optionally wait.

    Exit codes: 0 accepted (with --wait: every task COMPLETED); 1 --wait ended otherwise
    (the failed tenants and their errors are printed); 2 refused (unreadable file, field
    errors, PLAN_CONFLICT); 3 no worker picked it up in 30 s, or --timeout passed (what
    still runs is printed).
    """
    text = read_plan_file(plan_file, as_json)
    from deployer.cli.diffs import plan_diff, print_diff
    from deployer.cli.progress import follow
    from deployer.intake import config_json, plan_digest, validate_plan
    from deployer.settings import get_settings
    from stages.factory import forward_stages

    settings = get_settings()
    try:
        plan, checked = validate_plan(
            text,
            settings,
            lambda config: (
                {
                    "tenantId": config.tenant_id,
                    "stages": [s.name for s in forward_stages(config, settings)],
                },
                config_json(config),
            ),
        )
    except PlanValidationError as exc:
        refuse(exc.code, exc.message, exc.errors, as_json)
    rows = [row for row, _ in checked]
    digest = plan_digest(plan, (config for _, config in checked))
    if dry_run:
        changes = plan_diff(text, as_json)
        if as_json:
            print_json({"ok": True, "planId": plan.plan_id, "tasks": rows, "diff": changes})
        else:
            console.print(f"plan {plan.plan_id}: {len(rows)} task(s) valid")
            for row in rows[:20]:
                console.print(f"  {row['tenantId']}: {' → '.join(row['stages'])}")
            print_diff(changes)
        raise typer.Exit(Exit.OK)
    deployer = client()
    since = f"{int(time.time() * 1000) - 1000}-0"
    existed = deployer.plan_status(plan.plan_id) is not None
    deployer.submit(json.loads(text))
    status = _accepted(deployer, plan.plan_id, since, as_json, digest)
    # accepted while it existed before: the same body (another one is refused above)
    duplicate = existed
    if duplicate and not as_json:
        console.print(
            f"[yellow]note[/]: plan {plan.plan_id} already existed with this body; nothing changed"
        )
    if not wait:
        if as_json:
            print_json(
                {"ok": True, "planId": plan.plan_id, "status": status, "duplicate": duplicate}
            )
        else:
            console.print(f"plan {plan.plan_id} accepted: {status}")
        raise typer.Exit(Exit.OK)
    final = follow(deployer.store, plan.plan_id, timeout, quiet=as_json)
    failures, unfinished = report_end(deployer.store, plan.plan_id, final, timeout)
    if as_json:
        print_json(
            {
                **plan_summary(deployer.store, plan.plan_id),
                "duplicate": duplicate,
                "failures": failures,
                "running": unfinished,
            }
        )
    raise typer.Exit(exit_for_plan(final))


def report_end(
    store: Store, plan_id: str, final: str | None, timeout: float | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """After --wait: name what failed, or (on --timeout) what is still running."""
    if final is None:
        from deployer.cli.progress import report_unfinished

        return [], report_unfinished(store, plan_id, timeout)
    from deployer.cli.progress import report_failures

    return report_failures(store, plan_id), []


def _accepted(
    deployer: DeployerClient,
    plan_id: str,
    since: str,
    as_json: bool,
    digest: str,
    timeout: float = 30.0,
) -> str:
    """The plan's status once a worker accepted it (`DeployerClient.wait_accepted`); a
    refusal, PLAN_CONFLICT included, exits 2 with its code; no answer in time exits 3."""
    found = deployer.wait_accepted(plan_id, since, timeout=timeout, digest=digest)
    from deployer.client import PlanStatus, Rejection

    if isinstance(found, PlanStatus):
        return found.status
    if isinstance(found, Rejection):
        refuse(found.code or Code.PLAN_INVALID, found.message, found.errors, as_json)
    err.print(f"plan {plan_id} not picked up within {timeout:.0f}s: is a worker running?")
    raise typer.Exit(Exit.TIMEOUT)


def plan_summary(store: Store, plan_id: str, sample: int = 20) -> dict[str, Any]:
    """The plan's read model (deployer/views.py), {} if there is no such plan."""
    from deployer import views

    return views.plan_view(store, plan_id, sample) or {}


def plan_anywhere(store: Store, plan_id: str, sample: int = 20) -> dict[str, Any]:
    """The plan's read model, live or archived (deployer/archive/views.py), {} if unknown."""
    from deployer import views

    live = views.plan_view(store, plan_id, sample, live_only=True)
    if live:
        return live
    from deployer.archive.views import archived_plan_view

    stored = archive()
    return (archived_plan_view(stored, plan_id, sample) if stored else None) or {}


@app.command()
def status(
    plan_id: str,
    wave: Annotated[
        int | None,
        typer.Option("--wave", min=0, help="List this wave's tenants (a page at a time)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="Tenants per page.")] = 50,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="Where the page starts (nextCursor).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Where is plan P? Status, counts by task status, its waves, the first tasks.

    With --wave N: that wave and a page of its tenants (--limit, --cursor from nextCursor).
    """
    s = store()
    summary = plan_anywhere(s, plan_id)
    if not summary:
        refuse(Code.PLAN_NOT_FOUND, f"no plan {plan_id}", as_json=as_json)
    if summary.get("archived") and wave is not None:
        refuse(Code.PLAN_ARCHIVED, f"plan {plan_id} is archived: its waves are in its export "
               f"(deployer archive export --plan {plan_id})", as_json=as_json)  # fmt: skip
    if wave is not None:
        _status_of_wave(s, plan_id, summary, wave, limit, cursor, as_json)
        return
    if as_json:
        from deployer.public import PlanView, conform

        print_json(conform(PlanView, summary))
        return
    console.print(
        f"[bold]plan[/] {plan_id}  [bold]{summary['status']}[/]  "
        f"{summary['total']} task(s), maxConcurrency {summary['maxConcurrency']}"
    )
    if summary.get("archived"):
        console.print(f"  [cyan]archived[/] {summary.get('archivedAt')} (history: no commands)")
    console.print("  " + "  ".join(f"{k}={v}" for k, v in summary["counts"].items()))
    if summary.get("commandInProgress"):
        console.print(f"  [yellow]{summary['commandInProgress']} still working through its "
                      "tasks[/]")  # fmt: skip
    if summary.get("waves"):
        _print_waves(summary)
    _print_rows(summary["tasks"])


def _print_rows(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table("tenant", "status", "stage", "error / progress", box=None)
    for t in rows:
        said = (t.get("failure") or {}).get("error") or t.get("progress") or ""
        table.add_row(t.get("tenantId", ""), t.get("status", ""), t.get("stageName") or "",
                      said[:80])  # fmt: skip
    console.print(table)


def _status_of_wave(
    s: Store,
    plan_id: str,
    summary: dict[str, Any],
    wave: int,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    from deployer import views

    if not summary.get("waves"):
        refuse(Code.PLAN_HAS_NO_STRATEGY, f"plan {plan_id} has no waves", as_json=as_json)
    if wave >= len(summary["waves"]):
        refuse(Code.REQUEST_INVALID, f"plan {plan_id} has {len(summary['waves'])} wave(s), "
               f"numbered from 0", as_json=as_json)  # fmt: skip
    page = views.wave_page(s, plan_id, wave, limit=limit, cursor=cursor)
    if as_json:
        from deployer.public import WavePage, conform

        print_json(conform(WavePage, {"planId": plan_id, **page}))
        return
    w = page["wave"]
    console.print(f"[bold]plan[/] {plan_id}  wave {wave}: {w['state']}, {w['tenants']} tenant(s), "
                  f"{w['done']} done, {w['failed']} failed")  # fmt: skip
    _print_rows(page["items"])
    if page["nextCursor"]:
        console.print(f"  more: --cursor {page['nextCursor']}")


def _clock(stamp: str | None) -> str:
    """An ISO-8601 time from status as local HH:MM:SS."""
    from datetime import datetime

    if not stamp:
        return "?"
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return when.astimezone().strftime("%H:%M:%S")


def _print_waves(summary: dict[str, Any]) -> None:
    from rich.table import Table

    waves = Table("wave", "state", "tenants", "done", "failed", box=None)
    for w in summary["waves"]:
        state = w["state"]
        if "bakeUntil" in w:
            state = f"BAKING until {_clock(w['bakeUntil'])}"
        waves.add_row(str(w["index"]), state, str(w["tenants"]), str(w["done"]), str(w["failed"]))
    console.print(waves)
    budget = summary.get("budget")
    if budget:
        exceeded = " [red]exceeded[/]" if budget.get("exceeded") else ""
        if "exceededWave" in budget:  # scope wave: an earlier wave's budget stopped the plan
            exceeded = (
                f" [red]exceeded in wave {budget['exceededWave']} "
                f"({budget['exceededUsed']}/{budget['exceededMax']})[/]"
            )
        console.print(
            f"  failure budget: {budget['used']}/{budget['max']} ({budget['scope']}, "
            f"on exceed {budget['onExceed']}){exceeded}"
        )
    gate = summary.get("gate")
    if gate and gate.get("status") is not None:
        console.print(
            f"  gate {gate['name']}: held ({gate['status']}: {gate.get('answer') or '-'}), "
            f"asked again at {_clock(gate.get('nextCheckAt'))}, {gate.get('refusals')} refusal(s)",
            highlight=False,
        )
    if summary.get("windowOpensAt"):
        console.print(f"  outside its window: the next wave starts at "
                      f"{_clock(summary['windowOpensAt'])}")  # fmt: skip
    if summary.get("stopReason"):
        console.print(f"  [yellow]stopped[/]: {summary['stopReason']}")


@app.command()
def task(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id.")],
    plan: Annotated[
        str | None, typer.Option("--plan", help="This plan's task (default: the latest).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The tenant's latest task (or its task in --plan): status, stage, live progress,
    the current run's failure, context and the written hash."""
    from deployer import views

    s = store()
    out = views.plan_task_view(s, plan, tenant) if plan else views.latest_task_view(s, tenant)
    if not out and plan and _print_archived_task(plan, tenant, as_json):
        return
    if not out:
        where = f" in plan {plan}" if plan else ""
        refuse(Code.TASK_NOT_FOUND, f"no task for tenant {tenant}{where}", as_json=as_json)
    if as_json:
        from deployer.public import TaskView, conform

        print_json(conform(TaskView, out))
        return
    for k, v in out.items():
        if k not in ("context", "hash", "stages", "failure", "progress", "unrestored"):
            console.print(f"[bold]{k}[/]: {v}")
    for u in out["unrestored"]:  # a rollback's services it cannot restore
        console.print(f"[bold yellow]not restored[/] {u['service']}: {u['reason']}", soft_wrap=True)
    if out.get("progress"):
        console.print(f"[bold]progress[/]: {out['progress']}")
    stages = "  ".join(f"{st['name'] or st['index']}={st['state']}" for st in out["stages"])
    console.print(f"[bold]stages[/]: {stages}")
    if out["failure"]:
        f = out["failure"]
        code = f" {f['code']}" if f.get("code") else ""
        console.print(f"[bold red]failed[/] at {f['stage'] or '?'} ({f['at']}{code}): {f['error']}")
    if out["context"] is None:
        console.print("[bold]context[/]: (not sent yet: built when the task gets a slot)")
    else:
        console.print("[bold]additionalData[/]:", out["context"].get("additionalData"))
    if out.get("hash") is None:
        console.print("[bold]config hash[/]: (the key holds another Redis type, not a hash)")
        return
    console.print("[bold]config hash[/]:")
    for f_name, v in out["hash"].items():
        console.print(f"  {f_name} = {v}")


def _print_archived_task(plan: str, tenant: str, as_json: bool) -> bool:
    """Print the plan's task from the archive; False when the archive has none."""
    from deployer.archive.views import archived_task_view
    from deployer.models import task_id_for

    stored = archive()
    out = archived_task_view(stored, task_id_for(plan, tenant)) if stored else None
    if not out:
        return False
    if as_json:
        print_json(out)
        return True
    for k, v in out.items():
        if k not in ("timeline", "config", "failure", "commands"):
            console.print(f"[bold]{k}[/]: {v}")
    if out["failure"]:
        f = out["failure"]
        console.print(f"[bold red]failed[/] at {f['stage'] or '?'} ({f['code']}): {f['error']}")
    for e in out["timeline"]:
        console.print(f"  {e['ts']} {e['type']} {e.get('stage') or ''}", highlight=False)
    return True
