"""`deployer diff`: what a plan, or a rollback, would change in the live config hashes.

Text output names the changed part of a value: for a JSON field each differing nested field
by its JSON path (`$.routes[0].targetUri: "gw.blue.example" → "gw.green.example"`), else
both texts cut around where they first differ. A field that differs only where every run
sets a new value (ob-campaign's `$.timestamp`) is shown as volatile, not as a change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from deployer.cli.app import app, console, print_json, read_plan_file, refuse
from deployer.errors import Code, DeployerError, PlanValidationError
from deployer.jsondiff import ABSENT, around, text_paths

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
#: Nested fields listed per changed field before "… N more".
PATHS_SHOWN = 12
#: Width of a value shown in text.
WIDTH = 72


def plan_diff(text: str, as_json: bool) -> dict[str, Any]:
    from deployer.diff import diff_plan  # what a verb uses is imported when it runs
    from deployer.redis_client import client_for
    from deployer.settings import get_settings

    settings = get_settings()
    try:
        return diff_plan(
            text, settings, client_for(settings.state_url), client_for(settings.target_url)
        )
    except PlanValidationError as exc:
        refuse(exc.code, exc.message, exc.errors, as_json)


@app.command()
def diff(
    plan_file: Annotated[
        Path | None, typer.Argument(help="Plan JSON file ('-' for stdin).", show_default=False)
    ] = None,
    rollback: Annotated[
        bool,
        typer.Option(
            "--rollback", help="Diff a rollback of --tenant and/or --plan instead of a plan file."
        ),
    ] = False,
    plan: Annotated[
        str | None, typer.Option("--plan", help="--rollback: every task of this plan.")
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="--rollback: the tenant's latest task (with --plan: there)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """What the plan would change, per tenant and field, against the live config hashes
    (validated exactly as submit does; writes nothing), and its wave plan. With --rollback:
    what `deployer rollback` of --tenant/--plan would change, and each service it cannot
    restore, with why."""
    if rollback:
        if plan_file is not None:
            refuse(
                Code.TARGET_INVALID,
                "--rollback diffs --tenant/--plan, not a plan file",
                as_json=as_json,
            )
        changes = rollback_diff(plan, tenant, as_json)
        if as_json:
            print_json(changes)
        else:
            print_rollback_diff(changes)
        return
    if plan_file is None:
        refuse(
            Code.TARGET_INVALID,
            "give a plan file, or --rollback with --tenant/--plan",
            as_json=as_json,
        )
    changes = plan_diff(read_plan_file(plan_file, as_json), as_json)
    if as_json:
        print_json(changes)
    else:
        console.print(f"plan {changes['planId']}: {changes['summary']['tenants']} tenant(s)")
        print_diff(changes)


def rollback_diff(plan: str | None, tenant: str | None, as_json: bool) -> dict[str, Any]:
    if not plan and not tenant:
        refuse(Code.TARGET_INVALID, "--rollback needs --tenant and/or --plan", as_json=as_json)
    from deployer.diff import diff_rollback
    from deployer.redis_client import client_for, state_store
    from deployer.settings import get_settings

    settings = get_settings()
    try:
        return diff_rollback(
            state_store(settings), settings, client_for(settings.target_url), plan, tenant
        )
    except DeployerError as exc:
        refuse(exc.code, exc.message, as_json=as_json)


def print_diff(d: dict[str, Any], limit: int = 50) -> None:
    s = d["summary"]
    console.print(
        f"[bold]diff[/] against the live hashes: {s['changing']} tenant(s) change, "
        f"{s['unchanged']} unchanged, {s['ownedElsewhere']} last deployed by another plan"
    )
    for tenant in d["tenants"][:limit]:
        _print_version(tenant)
        if "otherPlan" in tenant:
            o = tenant["otherPlan"]
            state = "still running" if o["running"] else o["taskStatus"]
            console.print(f"    [yellow]latest task is plan {o['planId']}'s ({state})[/]")
        for c in tenant["changes"]:
            print_change(c)
    if len(d["tenants"]) > limit:
        console.print(f"  ... {len(d['tenants']) - limit} more (--json for all)")
    for w in d.get("waves", []):
        names = ", ".join(w["tenants"][:8]) + (" ..." if len(w["tenants"]) > 8 else "")
        console.print(f"  wave {w['index']}: {len(w['tenants'])} tenant(s): {names}")


def print_rollback_diff(d: dict[str, Any], limit: int = 50) -> None:
    s = d["summary"]
    what = " ".join(f"{k} {v}" for k, v in d["rollback"].items())
    console.print(
        f"[bold]rollback diff[/] of {what} against the live hashes: {s['tenants']} task(s), "
        f"{s['changing']} change, {s['unchanged']} unchanged, {s['unrestorable']} cannot "
        f"restore every service, {s['refused']} refused",
        soft_wrap=True,
    )
    for tenant in d["tenants"][:limit]:
        if "refused" in tenant:
            r = tenant["refused"]
            console.print(
                f"  [bold]{tenant['tenantId']}[/]  [red]refused[/] {r['code']}: {r['message']}"
            )
            continue
        _print_version(tenant)
        for c in tenant["changes"]:
            print_change(c)
        for u in tenant["unrestored"]:
            console.print(
                f"    [bold yellow]! not restored[/] {u['service']}: {u['reason']}", soft_wrap=True
            )
    if len(d["tenants"]) > limit:
        console.print(f"  ... {len(d['tenants']) - limit} more (--json for all)")


def _print_version(tenant: dict[str, Any]) -> None:
    v = tenant["version"]
    console.print(
        f"  [bold]{tenant['tenantId']}[/]  version {v['before']} → {v['after']} ({v['change']})"
    )


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= WIDTH else text[: WIDTH - 1] + "…"


def change_lines(c: dict[str, Any]) -> list[str]:
    """The text of one field's change (plain text, no markup)."""
    field, kind = c["field"], c["change"]
    if kind == "removed":
        return [f"- {field}"]
    if kind == "added":
        return [f"+ {field} = {around(c['after'], c['after'], WIDTH)[0]}"]
    volatile = set(c.get("volatile") or ())
    if kind == "volatile":
        where = ", ".join(sorted(volatile))
        return [f"· {field}: only {where} differs (volatile: set anew by every run)"]
    nested = text_paths(c["before"], c["after"])
    if nested is None:  # not JSON objects: both texts, cut around the first difference
        before, after = around(c["before"], c["after"], WIDTH)
        return [f"~ {field}: {before} → {after}"]
    lines = [f"~ {field}"]
    changed = [p for p in nested if p.path not in volatile]
    for p in changed[:PATHS_SHOWN]:
        if p.before is ABSENT:
            lines.append(f"    + {p.path} = {_shown(p.after)}")
        elif p.after is ABSENT:
            lines.append(f"    - {p.path} (was {_shown(p.before)})")
        elif isinstance(p.before, str) and isinstance(p.after, str):
            before, after = around(json.dumps(p.before), json.dumps(p.after), WIDTH)
            lines.append(f"    {p.path}: {before} → {after}")
        else:
            lines.append(f"    {p.path}: {_shown(p.before)} → {_shown(p.after)}")
    if len(changed) > PATHS_SHOWN:
        lines.append(f"    … {len(changed) - PATHS_SHOWN} more (--json for the values)")
    if volatile:
        lines.append(
            f"    · {', '.join(sorted(volatile))} differs too (volatile: set anew by every run)"
        )
    return lines


def print_change(c: dict[str, Any]) -> None:
    for line in change_lines(c):
        console.print(f"    {line}", soft_wrap=True, highlight=False, markup=False)


__all__ = ["diff", "plan_diff", "print_diff"]
