"""History verbs: `plans` (live and archived), `history --tenant` (every deployment of a
tenant), `archive` (run retention now; `archive export` prints a plan's archive as JSON)."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Annotated, Any

import typer

from deployer.cli.app import app, archive, console, err, print_json, refuse, store
from deployer.cli.plans import JsonOpt
from deployer.errors import Code

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '12h', '7d', '2w' -> seconds; ValueError otherwise."""
    found = _DURATION.match(text.lower())
    if not found:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 12h, 7d)")
    return float(found.group(1)) * _UNIT[found.group(2)]


def parse_since(text: str) -> int:
    """An ISO-8601 time or date, or a duration ago ('2d'), as ms since the epoch."""
    from datetime import UTC, datetime

    try:
        return int((time.time() - parse_duration(text)) * 1000)
    except ValueError:
        pass
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@app.command()
def plans(
    status_: Annotated[
        str | None, typer.Option("--status", help="Only plans in this status (COMPLETED, ...).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only plans created since (ISO-8601, or a duration: 7d)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="Plans per page.")] = 50,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="Where the page starts (nextCursor).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Plans, live and archived, newest first, a page at a time."""
    from deployer.archive.views import plans_page

    try:
        since_ms = parse_since(since) if since else None
    except ValueError as exc:
        refuse(Code.REQUEST_INVALID, f"--since: {exc}", as_json=as_json)
    page = plans_page(store(), archive(), status=status_.upper() if status_ else None,
                      since_ms=since_ms, limit=limit, cursor=cursor)  # fmt: skip
    if as_json:
        print_json(page)
        return
    from rich.table import Table

    table = Table("plan", "status", "tasks", "created", "where", box=None)
    for p in page["items"]:
        where = "archived" if p.get("archived") else "live"
        table.add_row(p["planId"], p["status"] or "", str(p["total"]), p["createdAt"] or "", where)
    console.print(table)
    if page["nextCursor"]:
        console.print(f"  more: --cursor {page['nextCursor']}")


@app.command()
def history(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id.")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="Rows per page.")] = 50,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="Where the page starts (nextCursor).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every deployment of the tenant, live and archived, newest first: plan, task, status,
    planVersion, run kind, when it started and ended."""
    from deployer.archive.views import tenant_history

    page = tenant_history(store(), archive(), tenant, limit, cursor)
    if as_json:
        print_json(page)
        return
    if not page["items"]:
        refuse(Code.TASK_NOT_FOUND, f"no deployment of tenant {tenant}")
    from rich.table import Table

    table = Table("plan", "status", "version", "run", "started", "ended", "where", box=None)
    for t in page["items"]:
        table.add_row(t["planId"], t["status"] or "", str(t["planVersion"] or "-"),
                      t["runKind"] or "", t["startedAt"] or "", t["endedAt"] or "",
                      "archived" if t["archived"] else "live")  # fmt: skip
    console.print(table)
    if page["nextCursor"]:
        console.print(f"  more: --cursor {page['nextCursor']}")


archive_app = typer.Typer(
    help="Run retention now (finished plans to the archive, out of Redis); export a plan.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(archive_app, name="archive")


@archive_app.callback()
def archive_now(
    ctx: typer.Context,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Plans finished this long ago (default "
            "DEPLOYER_RETENTION_SECONDS); e.g. 12h, 3d, 0 for every finished plan.",
        ),
    ] = None,  # fmt: skip
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list the plans that would be archived.")
    ] = False,
    plan: Annotated[
        list[str] | None, typer.Option("--plan", help="Only this plan (repeatable).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Archive every finished plan that is due, and remove it from Redis (each tenant's
    newest task stays). The workers do the same every DEPLOYER_RETENTION_INTERVAL_SECONDS."""
    if ctx.invoked_subcommand is not None:
        return
    from deployer.archive.db import archive_url, describe
    from deployer.retention import Retention
    from deployer.settings import get_settings

    try:
        seconds = parse_duration(older_than) if older_than is not None else None
    except ValueError as exc:
        refuse(Code.REQUEST_INVALID, f"--older-than: {exc}", as_json=as_json)
    s = store()
    try:
        report = Retention(s.r, get_settings()).run_pass(older_than=seconds, dry_run=dry_run,
                                                         only=plan or None)  # fmt: skip
    except Exception as exc:
        from deployer.retention import failure_reason

        if failure_reason(exc) != "archive":
            raise
        cause = (str(exc).splitlines() or [""])[0][:200]
        refuse(Code.ARCHIVE_UNAVAILABLE,
               f"the archive {describe(archive_url(get_settings()))} failed: "
               f"{type(exc).__name__}: {cause}; nothing was removed from Redis that it does "
               "not hold (counted in deployer_retention_failures_total)",
               as_json=as_json)  # fmt: skip
    out = {"dryRun": dry_run, "archive": describe(archive_url(get_settings())),
           **report.as_dict()}  # fmt: skip
    if as_json:
        print_json(out)
        return
    verb = "would archive" if dry_run else "archived"
    console.print(f"{verb} {len(report.archived)} plan(s) to {out['archive']}")
    for plan_id in report.archived:
        console.print(f"  {plan_id}")
    if not dry_run:
        console.print(f"  {report.tasks_archived} task(s), {report.events_archived} event(s) "
                      f"written; {report.tasks_removed} task(s) removed from Redis, "
                      f"{report.tasks_kept} kept (their tenants' newest)")  # fmt: skip
    for plan_id, why in report.skipped.items():
        err.print(f"[yellow]skipped[/] {plan_id}: {why}")


@archive_app.command("export")
def export(
    plan: Annotated[str, typer.Option("--plan", help="The archived plan.")],
) -> None:
    """Print a plan's archive as JSON: the plan, every task, every event (streamed, one
    document)."""
    stored = archive()
    row = stored.plan(plan) if stored else None
    if stored is None or row is None:
        refuse(Code.PLAN_NOT_FOUND, f"plan {plan} is not in the archive", as_json=True)
    out = sys.stdout  # typer.get_text_stream is untyped in the oldest typer admitted
    out.write('{"plan": ' + _dump(row) + ', "tasks": [')
    for i, task in enumerate(stored.iter_tasks(plan)):
        out.write(("," if i else "") + "\n" + _dump(task))
    out.write('], "events": [')
    for i, event in enumerate(stored.iter_events(plan)):
        out.write(("," if i else "") + "\n" + _dump(event))
    out.write("]}\n")
    out.flush()


def _dump(row: dict[str, Any]) -> str:
    from deployer.isotime import iso

    def camel(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(w.title() for w in rest)

    out = {}
    for k, v in row.items():
        out[camel(k)] = iso(v) if k.endswith("_at") else v
    return json.dumps(out, default=str)
