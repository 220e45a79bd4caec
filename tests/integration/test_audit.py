"""Complete per-plan and per-tenant history on a real Redis and worker.

The global stream `deployer:events` is bounded and shared: the old filter scanned its
newest count x 20 entries, so `events --plan P -n 5` printed nothing once other plans had
written a few hundred events. History now comes from the plan's and the tenant's own streams.
"""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from deployer import audit
from deployer.cli import app
from deployer.lifecycle import Command
from deployer.state import keys
from tests.helpers import bg_tenant, plan, unique, wait_for

runner = CliRunner()
DAY_MS = 24 * 3600 * 1000


def submit_and_finish(worker, r, plan_id: str, tenants: list[dict]) -> None:
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants)])
    wait_for(
        lambda: r.hget(keys.plan(plan_id), "status") in ("COMPLETED", "FAILED"),
        timeout=60,
        what=f"plan {plan_id} finished",
    )


def flood(r, n: int = 2000) -> None:
    """Other plans' traffic on the global stream."""
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(keys.EVENTS, {"type": "STAGE_STARTED", "planId": "other", "tenantId": f"o{i}"})
    pipe.execute()


def cli_events(*args: str) -> tuple[int, list[dict]]:
    result = runner.invoke(app, ["events", "--json", *args], catch_exceptions=False)
    # stdout: the events, one per line (notes on what was left out go to stderr)
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines() if line]


def test_plan_history_is_complete_after_the_global_stream_moved_on(worker, r):
    plan_id = unique()
    submit_and_finish(worker, r, plan_id, [bg_tenant(unique("t")) for _ in range(3)])
    recorded = [(i, f) for i, f in r.xrange(keys.EVENTS) if f.get("planId") == plan_id]
    assert len(recorded) > 10
    flood(r)
    # the bad case: the plan's events are no longer among the newest count x 20 entries
    assert not [f for _, f in r.xrevrange(keys.EVENTS, count=100) if f.get("planId") == plan_id]

    page = audit.history(r, plan_id=plan_id, count=5)
    assert page.events == list(reversed(recorded))[:5] and page.more and not page.trimmed
    everything = audit.history(r, plan_id=plan_id, count=10_000)
    assert everything.events == list(reversed(recorded)) and not everything.more
    older = audit.history(r, plan_id=plan_id, count=5, before=page.events[-1][0])
    assert older.events == list(reversed(recorded))[5:10]

    code, lines = cli_events("--plan", plan_id, "-n", "5")
    assert code == 0 and [e["id"] for e in lines] == [i for i, _ in recorded[-5:]]


def test_tenant_history_spans_plans_and_both_filters_give_one_task(worker, r):
    tenant = unique("t")
    first, second = unique(), unique()
    submit_and_finish(worker, r, first, [bg_tenant(tenant)])
    submit_and_finish(worker, r, second, [bg_tenant(tenant, version=21)])
    recorded = [(i, f) for i, f in r.xrange(keys.EVENTS) if f.get("tenantId") == tenant]
    flood(r)

    page = audit.history(r, tenant_id=tenant, count=100)
    assert page.events == list(reversed(recorded))
    assert {f["planId"] for _, f in page.events} == {first, second}
    one = audit.history(r, plan_id=first, tenant_id=tenant, count=100)
    assert one.events == [(i, f) for i, f in reversed(recorded) if f["planId"] == first]
    newest = audit.history(r, tenant_id=tenant, count=2)
    assert newest.events == list(reversed(recorded))[:2] and newest.more
    back = audit.history(r, tenant_id=tenant, count=2, before=newest.events[-1][0])
    assert back.events == list(reversed(recorded))[2:4]
    code, lines = cli_events("--tenant", tenant, "--plan", second, "-n", "3")
    assert code == 0 and {e["planId"] for e in lines} == {second} and len(lines) == 3
    assert lines[-1]["type"] == "TASK_COMPLETED"


def test_history_says_when_older_entries_were_trimmed(r):
    plan_id, tenant = unique(), unique("t")
    old = int(time.time() * 1000) - 8 * DAY_MS  # past the 7-day default retention
    for n in range(3):  # what emit wrote 8 days ago: the plan's entry, the tenant's reference
        entry = r.xadd(keys.events_plan(plan_id), {"type": "OLD", "tenantId": tenant},
                       id=f"{old}-{n}")  # fmt: skip
        r.rpush(keys.events_tenant(tenant), f"{entry} {plan_id}")
    before = audit.history(r, tenant_id=tenant)
    assert len(before.events) == 3 and not before.trimmed  # nothing removed yet
    audit.record(r, {"type": "TASK_PAUSED", "planId": plan_id, "tenantId": tenant})

    for page in (audit.history(r, tenant_id=tenant), audit.history(r, plan_id=plan_id)):
        assert [f["type"] for _, f in page.events] == ["TASK_PAUSED"]
        assert page.trimmed and page.reaches_trimmed_part
    # an idle history expires whole
    assert 0 < r.pttl(keys.events_tenant(tenant)) <= 7 * DAY_MS
    assert 0 < r.pttl(keys.events_plan(plan_id)) <= 7 * DAY_MS
    result = runner.invoke(app, ["events", "--tenant", tenant])
    assert "older history of tenant" in result.output and "trimmed" in result.output


def test_a_tenants_history_costs_references_not_a_stream_each(worker, r):
    tenant = unique("t")
    submit_and_finish(worker, r, unique(), [bg_tenant(tenant)])
    assert r.type(keys.events_tenant(tenant)) == "list"
    assert r.memory_usage(keys.events_tenant(tenant)) < 1000  # a stream of its own: ~4.7 KB


def test_a_plan_whose_history_expired_says_so(r):
    plan_id = unique()
    r.hset(keys.plan(plan_id), mapping={"planId": plan_id, "status": "COMPLETED"})
    page = audit.history(r, plan_id=plan_id)
    assert page.events == [] and page.trimmed
    assert not audit.history(r, plan_id=unique("never")).trimmed
    tenant = unique("t")
    r.set(keys.tenant(tenant), "task-x")  # the tenant had a task; its history expired
    assert audit.history(r, tenant_id=tenant).trimmed


@pytest.fixture()
def control(worker):
    from tasks.runtime import controller

    return controller()


def test_refused_commands_are_recorded_as_refusals_not_as_done(worker, r, control):
    plan_id, tenant = unique(), unique("t")
    submit_and_finish(worker, r, plan_id, [bg_tenant(tenant)])
    assert not control.execute(Command.PAUSE, {"planId": plan_id}, by="ops", reason="window")["ok"]
    assert not control.execute(Command.RETRY, {"tenantId": tenant}, by="ops")["ok"]

    plan_events = [f for _, f in audit.history(r, plan_id=plan_id).events]
    # before: PLAN_PAUSE was written (and the plan flagged) before any task was asked
    assert "PLAN_PAUSE" not in {f["type"] for f in plan_events}
    refusals = [f for f in plan_events if f["type"] == "COMMAND_REFUSED"]
    assert [f["command"] for f in refusals] == ["retry", "pause"]  # newest first
    refusal = refusals[1]
    assert refusal["code"] == "TASK_NOT_RUNNING" and "tenantId" not in refusal
    assert refusal["by"] == "ops" and refusal["reason"] == "window"
    newest = audit.history(r, tenant_id=tenant, count=1).events[0][1]
    assert newest["type"] == "COMMAND_REFUSED" and newest["command"] == "retry"
    assert newest["code"] == "TASK_NOT_FAILED"
    nowhere = unique("nope")
    assert control.execute(Command.CANCEL, {"planId": nowhere})["code"] == "PLAN_NOT_FOUND"
    recent = [f for _, f in r.xrevrange(keys.EVENTS, count=100)]
    assert {"type": "COMMAND_REFUSED", "target": f"plan {nowhere}"}.items() <= next(
        f for f in recent if f.get("target") == f"plan {nowhere}"
    ).items()
    assert not r.exists(keys.events_plan(nowhere))  # no history kept for a plan that is none


def test_a_plan_command_is_recorded_after_its_tasks_with_what_it_did(worker, r, control, planted):
    plan_id, tenants = unique(), [unique("t") for _ in range(2)]
    planted.lease(tenants[0])
    worker.send_task("deployer.submit_plan", [plan(plan_id, [bg_tenant(t) for t in tenants])])
    wait_for(lambda: r.hget(keys.plan(plan_id), "c:COMPLETED") == "1", what="one done")
    assert control.execute(Command.CANCEL, {"planId": plan_id}, by="ops")["ok"]
    newest = audit.history(r, plan_id=plan_id, count=1).events[0][1]
    assert newest["type"] == "PLAN_CANCEL" and newest["by"] == "ops"
    assert int(newest["acted"]) == 1 and int(newest["skipped"]) == 1
    wait_for(lambda: r.hget(keys.plan(plan_id), "status") == "CANCELLED", what="CANCELLED")


def cli_notes(*args: str) -> tuple[int, list[dict], str]:
    """`deployer events ARGS`: exit code, the events (stdout), what stderr said."""
    result = runner.invoke(app, ["events", *args], catch_exceptions=False)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line]
    return result.exit_code, lines, result.stderr


def test_events_say_how_many_older_ones_are_left_out_and_all_prints_them(worker, r):
    plan_id = unique()
    submit_and_finish(worker, r, plan_id, [bg_tenant(unique("t")) for _ in range(3)])
    recorded = [i for i, f in r.xrange(keys.EVENTS) if f.get("planId") == plan_id]
    total = len(recorded)
    assert total > 10

    code, lines, said = cli_notes("--plan", plan_id, "-n", "5", "--json")
    assert code == 0 and [e["id"] for e in lines] == recorded[-5:]
    note = json.loads(said)
    assert note["more"] == total - 5
    assert note["message"] == (
        f"{total - 5} older events of plan {plan_id} not shown: use -n {total} or --all"
    )
    text = runner.invoke(app, ["events", "--plan", plan_id, "-n", "5"])
    assert f"note: {total - 5} older events of plan {plan_id} not shown" in text.stderr

    code, lines, said = cli_notes("--plan", plan_id, "--all", "--json")
    assert code == 0 and [e["id"] for e in lines] == recorded and said == ""  # nothing left out
    code, lines, said = cli_notes("--plan", plan_id, "-n", str(total), "--json")
    assert len(lines) == total and said == ""
    # one task of the plan (both filters): counted among the tenant's references
    tenant = next(e["tenantId"] for e in lines if "tenantId" in e)
    mine = [e["id"] for e in lines if e.get("tenantId") == tenant]
    code, lines, said = cli_notes("--plan", plan_id, "--tenant", tenant, "-n", "1", "--json")
    assert [e["id"] for e in lines] == mine[-1:]
    assert json.loads(said)["more"] == len(mine) - 1
    code, lines, said = cli_notes("--tenant", tenant, "--all", "--json")
    assert [e["id"] for e in lines] == mine and said == ""


def test_a_history_that_expired_whole_and_began_again_says_since_when(worker, r, plan_file):
    """A plan rolled back after its history expired: before, only the rollback's events
    were printed, with no word that the rest was gone."""
    plan_id, tenant = unique(), unique("t")
    submit_and_finish(worker, r, plan_id, [bg_tenant(tenant)])
    code, lines, said = cli_notes("--plan", plan_id, "--json")
    assert lines[0]["type"] == "PLAN_CREATED" and said == ""  # whole: nothing to say
    # Retention: the idle plan's and tenant's histories expire whole (their PEXPIRE).
    for key in (keys.events_plan(plan_id), keys.events_tenant(tenant)):
        r.pexpire(key, 1)
    wait_for(lambda: not r.exists(keys.events_plan(plan_id), keys.events_tenant(tenant)))

    rolled = runner.invoke(app, ["rollback", "--tenant", tenant, "--wait", "--timeout", "60"])
    assert rolled.exit_code == 0, rolled.output
    for target in (["--plan", plan_id], ["--tenant", tenant]):
        code, lines, said = cli_notes(*target, "--json")
        assert code == 0 and "TASK_ROLLED_BACK" in [e["type"] for e in lines]
        assert "PLAN_CREATED" not in [e["type"] for e in lines]  # what expired
        note = json.loads(said)
        first_ms = int(lines[0]["id"].split("-")[0])
        assert note["trimmed"] is True
        assert (
            note["since"]
            == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(first_ms / 1000))
            + f".{first_ms % 1000:03d}Z"
        )
        assert "was trimmed: it is kept since" in note["message"]
        assert "events are kept 7 days (DEPLOYER_EVENTS_RETENTION_SECONDS)" in note["message"]
        text = runner.invoke(app, ["events", *target])
        assert "older history of" in text.stderr and "it is kept since" in text.stderr


def test_events_follow_prints_what_comes_after_the_history_once(r):
    """`deployer events --follow` (a plan's own stream, or a tenant's filtered out of the
    global one): the kept history, then each new event of its target as it is recorded."""
    import subprocess
    import sys
    import threading
    from pathlib import Path

    from tests.helpers import ROOT, worker_env

    plan_id, tenant = unique("follow"), unique("ft")
    audit.record(r, {"type": "PLAN_CREATED", "planId": plan_id})
    audit.record(r, {"type": "TASK_RUNNING", "planId": plan_id, "tenantId": tenant})
    deployer = str(Path(sys.executable).parent / "deployer")
    followers = {
        "plan": subprocess.Popen([deployer, "events", "--plan", plan_id, "--follow", "--json"],
                                 cwd=ROOT, env=worker_env(), stdout=subprocess.PIPE, text=True),
        "tenant": subprocess.Popen([deployer, "events", "--tenant", tenant, "-f", "--json"],
                                   cwd=ROOT, env=worker_env(), stdout=subprocess.PIPE, text=True),
    }  # fmt: skip
    printed: dict[str, list[dict]] = {name: [] for name in followers}

    def read(name: str) -> None:
        stdout = followers[name].stdout
        assert stdout is not None
        for line in stdout:
            printed[name].append(json.loads(line))

    readers = [threading.Thread(target=read, args=(n,), daemon=True) for n in followers]
    for t in readers:
        t.start()
    try:
        wait_for(lambda: len(printed["plan"]) == 2, timeout=30, what="the plan's history")
        wait_for(lambda: len(printed["tenant"]) == 1, timeout=30, what="the tenant's history")
        paused = audit.record(r, {"type": "TASK_PAUSED", "planId": plan_id, "tenantId": tenant})
        audit.record(r, {"type": "TASK_PAUSED", "planId": unique("other"), "tenantId": "x"})
        note = audit.record(r, {"type": "PLAN_PAUSE", "planId": plan_id})
        wait_for(lambda: len(printed["plan"]) == 4, timeout=30, what="the plan's new events")
        wait_for(lambda: len(printed["tenant"]) == 2, timeout=30, what="the tenant's new event")
        assert [e["type"] for e in printed["plan"]] == [
            "PLAN_CREATED", "TASK_RUNNING", "TASK_PAUSED", "PLAN_PAUSE",
        ]  # fmt: skip
        assert [e["id"] for e in printed["plan"][2:]] == [paused, note]
        assert [e["type"] for e in printed["tenant"]] == ["TASK_RUNNING", "TASK_PAUSED"]
        assert printed["tenant"][1]["id"] == paused
    finally:
        for proc in followers.values():
            proc.terminate()
            proc.wait(timeout=10)
        for t in readers:
            t.join(timeout=10)
        for proc in followers.values():
            assert proc.stdout is not None
            proc.stdout.close()
    assert len(printed["plan"]) == 4 and len(printed["tenant"]) == 2  # nothing twice
