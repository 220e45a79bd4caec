"""Command verbs (deployer.lifecycle.Command): pause, resume, cancel, retry, rollback for a
tenant or a plan, the wave verbs approve, promote and budget, and the event history they
leave."""

from __future__ import annotations

import getpass
import json
import socket
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deployer.cli.app import Exit, app, client, console, err, print_json, refuse, store
from deployer.cli.plans import JsonOpt, TimeoutOpt, exit_for_plan, report_end
from deployer.errors import Code

# What a verb acts with is imported when it runs (see deployer/cli/plans.py).
if TYPE_CHECKING:
    from deployer import audit
    from deployer.lifecycle import Command
    from deployer.state.store import Store

#: The verbs registered here, by their `deployer.lifecycle.Command` values (the enum's module
#: loads the plan models: a verb converts its name when it runs).
PAUSE, RESUME, CANCEL = "pause", "resume", "cancel"

PlanOpt = Annotated[
    str | None, typer.Option("--plan", help="Every task of this plan (with --tenant: one task).")
]
TenantOpt = Annotated[
    str | None,
    typer.Option("--tenant", help="This tenant's latest task (with --plan: its task there)."),
]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who asks (recorded in events).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (recorded in events).")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Follow until the run ends.")]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Apply even where a newer task deployed the tenant since (else the task ends "
        "SUPERSEDED); recorded in the events.",
    ),
]


def _target(plan: str | None, tenant: str | None, as_json: bool) -> dict[str, str]:
    """--plan: every task of the plan; --tenant: its latest task; both: that one task."""
    from deployer.client import target

    if not plan and not tenant:
        refuse(Code.TARGET_INVALID, "give --plan, --tenant, or both (one task)", as_json=as_json)
    return target(plan or None, tenant or None)


def _run(
    command: Command | str,
    target: dict[str, Any],
    by: str | None,
    reason: str | None,
    as_json: bool,
    **kw: Any,
) -> dict[str, Any]:
    from deployer.lifecycle import Command

    who = by or f"{getpass.getuser()}@{socket.gethostname()}"
    # acts here and now (the workers' code, DeployerClient.execute): the answer is printed
    result = client().execute(Command(command), target, by=who, reason=reason, **kw)
    if not result["ok"]:
        refuse(result["code"], result.get("message", ""), as_json=as_json)
    if as_json:
        from deployer.public import CommandResult, conform

        print_json(conform(CommandResult, result))
    else:
        note = "[yellow]already in effect[/] " if result["code"] == Code.ALREADY else ""
        console.print(f"{note}{result['message']}", soft_wrap=True, highlight=False)
        for skipped in result.get("skipped", [])[:10]:
            console.print(f"  skipped {skipped['tenantId']}: {skipped['code']}")
        if "skipped" in result:  # a plan's answer: its message only counts them
            for u in result.get("unrestored", [])[:20]:
                line = f"{u['tenantId']} {u['service']}: {u['reason']}"
                console.print(f"  [yellow]not restored[/] {line}", soft_wrap=True)
    return result


def _wait_task(
    s: Store, tenant: str, plan: str | None, success: str, timeout: float | None
) -> Exit:
    """Until the tenant's task ENDED (deployer.lifecycle); exit 0 when it ended `success`."""
    from deployer.lifecycle import ENDED
    from deployer.models import task_id_for
    from deployer.state.record import Field

    waited = (Field.STATUS, Field.STAGE_NAME, Field.PROGRESS, Field.LAST_ERROR)
    deadline = time.monotonic() + timeout if timeout else None
    status = ""
    with console.status(f"waiting for tenant {tenant}") as spinner:
        while True:
            task_id = task_id_for(plan, tenant) if plan else s.task_id_for_tenant(tenant) or ""
            task = s.get_tasks([task_id], waited)[0]
            status = task.status.value if task.status else ""
            spinner.update(f"tenant {tenant}: {status} {task.stage_name} {task.progress}")
            if task.status in ENDED:
                break
            if deadline and time.monotonic() > deadline:
                stage = f"{task.stage_name or '-'} {task.progress}".rstrip()
                err.print(f"[yellow]timeout[/]: tenant {tenant} still {status} after {timeout}s "
                          f"at {stage}", highlight=False)  # fmt: skip
                return Exit.TIMEOUT
            time.sleep(0.2)
    console.print(f"tenant {tenant}: {status}")
    if status != success and task.last_error:
        err.print(f"  {task.last_error}", highlight=False, soft_wrap=True)
    return Exit.OK if status == success else Exit.ENDED_OTHERWISE


def _simple(
    command: str,
    plan: str | None,
    tenant: str | None,
    by: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    _run(command, _target(plan, tenant, as_json), by, reason, as_json)


def _simple_verb(command: str, doc: str) -> None:
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
    app.command(name=command)(verb)


_simple_verb(PAUSE, "Pause at the next stage start or HealthCheck poll (waiting tasks at once).")


BudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--budget",
        help="A new failure budget for the plan (a count, or a share like 5%) before it "
        "resumes: an auto-paused plan goes on on purpose.",
    ),
]
ResetOpt = Annotated[
    bool,
    typer.Option("--reset-budget", help="The failures so far no longer count against the budget."),
]


@app.command(name=RESUME)
def resume(
    plan: PlanOpt = None,
    tenant: TenantOpt = None,
    by: ByOpt = None,
    reason: ReasonOpt = None,
    force: ForceOpt = False,
    budget: BudgetOpt = None,
    reset_budget: ResetOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Continue paused tasks where they stopped, without redoing completed stages.

    A task whose tenant a newer task deployed meanwhile ends SUPERSEDED, unless --force.
    With --budget / --reset-budget (a plan with a failure budget) the budget changes first.
    One task (--tenant, with or without --plan) of a plan paused as a whole is refused
    PLAN_PAUSED: resume the plan (--plan P alone).
    """
    if (budget is not None or reset_budget) and (tenant or not plan):
        refuse(Code.TARGET_INVALID, "--budget and --reset-budget take --plan alone",
               as_json=as_json)  # fmt: skip
    _run(RESUME, _target(plan, tenant, as_json), by, reason, as_json, force=force,
         budget=budget, reset=reset_budget)  # fmt: skip


@app.command(name="budget")
def budget(
    plan: Annotated[str, typer.Option("--plan", help="The plan whose failure budget changes.")],
    maximum: Annotated[
        str | None,
        typer.Option("--max", help="Failed tenants tolerated: a count, or a share like 5%."),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="The failures so far no longer count.")
    ] = False,
    by: ByOpt = None,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Raise, lower or reset a plan's failure budget (recorded); `resume --budget` also
    resumes a plan the budget paused."""
    _run("budget", {"planId": plan}, by, reason, as_json, budget=maximum, reset=reset)


_simple_verb(CANCEL, "Stop tasks for good (running ones at their next stage start or poll).")


WaveOpt = Annotated[
    int | None, typer.Option("--wave", min=0, help="The wave (its index, as status shows it).")
]


@app.command()
def approve(
    plan: Annotated[str, typer.Option("--plan", help="The plan whose wave waits.")],
    wave: WaveOpt = None,
    by: ByOpt = None,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start wave N of the plan if it is the one waiting for approval (strategy approval
    first/every). Without --wave: the wave waiting now, shown before it is approved."""
    if wave is None:
        wave = _waiting_wave(plan, as_json)
    _run("approve", {"planId": plan, "wave": wave}, by, reason, as_json)


def _waiting_wave(plan: str, as_json: bool) -> int:
    """The wave that awaits approval, shown to the operator (what they approve)."""
    from deployer import views

    s = store()
    summary = views.plan_view(s, plan, sample=0)
    if summary is None:
        refuse(Code.PLAN_NOT_FOUND, f"no plan {plan}", as_json=as_json)
    if not summary.get("waves"):
        refuse(Code.PLAN_HAS_NO_STRATEGY, f"plan {plan} has no strategy: nothing to approve",
               as_json=as_json)  # fmt: skip
    if summary.get("waveState") != "AWAITING_APPROVAL":
        refuse(Code.PLAN_NOT_AWAITING_APPROVAL,
               f"plan {plan}: no wave awaits approval (wave {summary.get('wave')} is "
               f"{summary.get('waveState')})", as_json=as_json)  # fmt: skip
    wave = int(summary["wave"])
    page = views.wave_page(s, plan, wave, limit=5)
    names = ", ".join(str(item["tenantId"]) for item in page["items"])
    more = f" and {page['total'] - len(page['items'])} more" if page["total"] > 5 else ""
    (err if as_json else console).print(
        f"plan {plan}: wave {wave} awaits approval ({page['total']} tenant(s): {names}{more})",
        highlight=False,
    )
    return wave


@app.command()
def promote(
    plan: Annotated[str, typer.Option("--plan", help="The plan to promote.")],
    wave: WaveOpt = None,
    all_waves: Annotated[
        bool, typer.Option("--all", help="Skip every remaining wave's bake, not only this one.")
    ] = False,
    approve_too: Annotated[
        bool,
        typer.Option("--approve", help="Also approve a wave that waits for approval (recorded)."),
    ] = False,
    by: ByOpt = None,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End the current wave's bake now (or skip it when it comes); --all: every remaining
    wave's too. A wave waiting for approval is refused unless --approve (gates and
    maintenance windows still hold)."""
    where: dict[str, Any] = {"planId": plan}
    if wave is not None:
        where["wave"] = wave
    _run("promote", where, by, reason, as_json, all_waves=all_waves, approve=approve_too)


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
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-run the last run of FAILED tasks (same stages, same context, scratch cleared).

    SUPERSEDED tasks only with --force.
    """
    target = _target(plan, tenant, as_json)
    _run("retry", target, by, None, as_json, from_checkpoint=from_checkpoint, force=force)
    _finish(plan, tenant, wait, timeout, "COMPLETED")


@app.command()
def rollback(
    plan: PlanOpt = None,
    tenant: TenantOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
    by: ByOpt = None,
    reason: ReasonOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Roll back even a tenant a newer task deployed since (else that task ends "
            "SUPERSEDED and the newer config stays); recorded in the events.",
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Refuse (ROLLBACK_INCOMPLETE) a task's rollback that cannot restore every "
            "service its forward run changed.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Deploy each task's previous config snapshot again, through a new chain.

    A tenant that a newer task deployed since is left alone (SUPERSEDED), unless --force.
    A service the forward run changed that the snapshot cannot restore (it lacks the
    service's fields, e.g. no trunkGroup for asbc-gateway) is named with why; --strict
    refuses such a rollback instead. `deployer diff --rollback` shows it beforehand.
    """
    target = _target(plan, tenant, as_json)
    _run("rollback", target, by, reason, as_json, force=force, strict=strict)
    _finish(plan, tenant, wait, timeout, "ROLLED_BACK")


def _finish(
    plan: str | None,
    tenant: str | None,
    wait: bool,
    timeout: float | None,
    success: str,
) -> None:
    from deployer.cli.progress import follow

    if not wait:
        raise typer.Exit(Exit.OK)
    s = store()
    if tenant:
        raise typer.Exit(_wait_task(s, tenant, plan, success, timeout))
    assert plan is not None
    final = follow(s, plan, timeout)
    report_end(s, plan, final, timeout)
    raise typer.Exit(exit_for_plan(final, success))


@app.command()
def events(
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    plan: PlanOpt = None,
    tenant: TenantOpt = None,
    count: Annotated[
        int, typer.Option("--count", "-n", min=0, help="How many of the newest events.")
    ] = 50,
    all_: Annotated[
        bool, typer.Option("--all", help="Every kept event, oldest first (ignores -n).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Events (transitions, stage starts and ends, refusals), newest last, optionally following.

    With --plan and/or --tenant: that history, read from the plan's or the tenant's own
    stream, kept DEPLOYER_EVENTS_RETENTION_SECONDS (7 days). The newest -n (50) are printed,
    with a line saying how many older ones were left out (--all prints them all) and, when
    older history is gone (retention), since when it is kept. Without them: the newest
    entries of the bounded global stream.
    """
    from deployer import audit
    from deployer.state import events as event_log

    r = store().r

    def show(entry_id: str, fields: dict[str, str]) -> None:
        if as_json:
            console.print(json.dumps({"id": entry_id, **fields}), soft_wrap=True)
            return
        console.print(f"{_clock(fields.get('ts'))} [bold]{fields.get('type', '?')}[/] "
                      f"{_rest(fields)}", soft_wrap=True, highlight=False)  # fmt: skip

    def note(message: str, **data: Any) -> None:  # stderr: stdout holds the events only
        if as_json:
            err.print(json.dumps({**data, "message": message}), soft_wrap=True, highlight=False)
        else:
            err.print(f"[yellow]note[/]: {message}", soft_wrap=True, highlight=False)

    # followed afterwards: the plan's own stream, else the global one filtered (the live
    # feed keeps up); its newest id is taken first, so nothing between the two reads is lost
    followed = plan if plan and not tenant else None
    if plan and _archived_events(r, plan, tenant, 0 if all_ else count, show, note):
        return
    last = event_log.newest_id(r, followed)
    shown = _print_history(r, plan, tenant, count, all_, show, note)
    if tenant and not plan:
        _note_archived_plans(tenant, note)
    while follow_:
        batch = event_log.read_after(r, followed, last, block_ms=1000, count=500)
        for entry_id, fields in batch:
            last = entry_id
            if audit.id_key(entry_id) <= shown:
                continue
            if (not plan or fields.get("planId") == plan) and (
                not tenant or fields.get("tenantId") == tenant
            ):
                show(entry_id, fields)


def _print_history(
    r: Any, plan: str | None, tenant: str | None, count: int, all_: bool, show: Any, note: Any
) -> tuple[int, int]:
    """Print the kept history (with its notes); the newest id printed, as `audit.id_key`."""
    from deployer import audit

    page = audit.history(r, plan_id=plan, tenant_id=tenant, count=0 if all_ else count)
    label = target_label(plan, tenant) if plan or tenant else "the global stream"
    for message, data in history_notes(page, label, count, all_, bool(plan or tenant)):
        note(message, **data)
    shown = (0, 0)
    entries = audit.iter_history(r, plan, tenant) if all_ else reversed(page.events)
    for entry_id, fields in entries:
        show(entry_id, fields)
        shown = max(shown, audit.id_key(entry_id))
    return shown


def _note_archived_plans(tenant: str, note: Any) -> None:
    """A tenant's events of archived plans live in the archive only: say where."""
    from deployer.cli.app import archive

    stored = archive()
    rows = stored.history(tenant, limit=1) if stored else []
    if rows:
        note(f"events of tenant {tenant} in archived plans are not above: `deployer history "
             f"--tenant {tenant}` lists its plans, `deployer events --plan P` reads one",
             archived=True)  # fmt: skip


def _archived_events(
    r: Any, plan: str, tenant: str | None, count: int, show: Any, note: Any
) -> bool:
    """Print an archived plan's events from the archive; False when the plan is live."""
    from deployer.state.events import plan_events_live

    if plan_events_live(r, plan):
        return False
    from deployer.archive.views import archived_events
    from deployer.cli.app import archive

    stored = archive()
    if stored is None or stored.plan(plan) is None:
        return False
    note(f"plan {plan} is archived: its events are read from the archive", archived=True)
    for entry_id, fields in archived_events(stored, plan, count, tenant):
        show(entry_id, fields)
    return True


def history_notes(
    page: audit.History, label: str, count: int, all_: bool, filtered: bool
) -> list[tuple[str, dict[str, Any]]]:
    """What a history print leaves out, in words (and as data for --json): the older events
    not shown, and older history that is gone (said whenever the print reaches back to it)."""
    notes: list[tuple[str, dict[str, Any]]] = []
    if page.trimmed and filtered and (all_ or not page.more):
        message, since = trimmed_note(label, page.oldest_kept)
        notes.append((message, {"trimmed": True, "since": since}))
    if page.more and not all_:
        older = page.older
        more = f"{older} older" if older is not None else "older"
        wider = f"-n {count + older}" if older is not None else "a larger -n"
        notes.append((f"{more} events of {label} not shown: use {wider} or --all", {"more": older}))
    return notes


def trimmed_note(label: str, oldest_kept: str) -> tuple[str, str | None]:
    """What to say when older history is gone: since when it is kept (ISO-8601 UTC too)."""
    from deployer.settings import get_settings

    kept = _duration(get_settings().events_retention_seconds)
    why = f"events are kept {kept} (DEPLOYER_EVENTS_RETENTION_SECONDS)"
    if not oldest_kept:
        return f"older history of {label} was trimmed: none of it is kept; {why}", None
    ms = int(oldest_kept.split("-")[0])
    since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ms / 1000))
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
    return f"older history of {label} was trimmed: it is kept since {since}; {why}", iso


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} s"


def target_label(plan: str | None, tenant: str | None) -> str:
    if plan and tenant:
        return f"tenant {tenant} in plan {plan}"
    return f"plan {plan}" if plan else f"tenant {tenant}"


def _clock(ms: str | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(int(ms or 0) / 1000))


def _rest(fields: dict[str, str]) -> str:
    return " ".join(
        f"{k}={v}" for k, v in fields.items() if k not in ("type", "ts") and v not in ("", None)
    )
