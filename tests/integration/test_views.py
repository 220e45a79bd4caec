"""Read models (deployer/views.py) through `deployer status/task --json` and directly:
typed numbers, ISO-8601 times, live progress, only the current run's failure, bounded pages."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from deployer import views
from deployer.cli import app
from deployer.redis_client import client_for
from deployer.settings import get_settings
from deployer.state.store import Store
from tests.helpers import bg_tenant, plan, task_rows, unique, wait_for

PREFIX = "icc_ai_ops_srv:tenant_config:"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
runner = CliRunner()


def cli_json(*args: str) -> dict:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return json.loads(result.output)


def task_json(tenant: str) -> dict:
    return cli_json("task", "--tenant", tenant, "--json")


def submit(worker, r, plan_id, tenants, **extra):
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants, **extra)])
    wait_for(lambda: r.exists(f"deployer:plan:{plan_id}"), what="plan stored")


def test_task_json_shows_the_live_progress_text_while_the_tenant_is_busy(worker, r, planted):
    plan_id, tenant = unique(), unique("t")
    planted.lease(tenant)  # another run holds it
    submit(worker, r, plan_id, [bg_tenant(tenant)])
    wait_for(
        lambda: task_json(tenant).get("progress") == "waiting for the tenant lease",
        what="progress text",
    )
    r.delete(f"deployer:lease:{tenant}")
    wait_for(lambda: task_json(tenant)["status"] == "COMPLETED", timeout=30, what="COMPLETED")


def test_task_json_is_typed_with_iso_times_and_only_the_current_runs_failure(worker, r, planted):
    plan_id, tenant = unique(), unique("t")
    planted.not_a_hash(PREFIX + tenant)  # the write fails with WRONGTYPE
    submit(worker, r, plan_id, [bg_tenant(tenant)])
    wait_for(lambda: task_json(tenant)["status"] == "FAILED", timeout=30, what="FAILED")
    failed = task_json(tenant)
    assert failed["failure"]["stage"] == "blue-green-gateway"
    assert failed["failure"]["code"] == "STEP_FAILED"
    assert "WRONGTYPE" in failed["failure"]["error"] and ISO.match(failed["failure"]["at"])
    assert failed["hash"] is None  # the key is not a hash: shown as such, not an error
    for k in ("retryCount", "totalStages", "stageIndex", "checkpoint"):
        assert isinstance(failed[k], int), k
    for k in ("createdAt", "startedAt", "endedAt", "updatedAt"):
        assert ISO.match(failed[k]), (k, failed[k])
    assert [s["state"] for s in failed["stages"]] == ["FAILED"]
    text = runner.invoke(app, ["task", "--tenant", tenant]).output
    assert "failed at blue-green-gateway" in text and "WRONGTYPE" in text
    assert "STEP_FAILED)" in text
    assert "another Redis type" in text

    r.delete(PREFIX + tenant)
    assert runner.invoke(app, ["retry", "--tenant", tenant]).exit_code == 0
    wait_for(lambda: task_json(tenant)["status"] == "COMPLETED", timeout=30, what="COMPLETED")
    # the earlier run's failed stage is still in the record ...
    assert r.hget(f"deployer:task:{failed['taskId']}", "failedStage") == "blue-green-gateway"
    done = task_json(tenant)
    assert done["failure"] is None and "failedStage" not in done  # ... but not shown
    assert "failureCode" not in done
    assert done["progress"] is None  # the last poll's text is not live once finished
    assert done["retryCount"] == 1 and done["stages"][0]["state"] == "DONE"
    assert json.loads(done["hash"]["metadata"]) == {"version": 20}


def test_task_can_be_read_for_one_plan_of_a_tenant(worker, r):
    first, second, tenant = unique(), unique(), unique("t")
    submit(worker, r, first, [bg_tenant(tenant, version=20)])
    wait_for(lambda: r.hget(f"deployer:plan:{first}", "status") == "COMPLETED", what="first")
    submit(worker, r, second, [bg_tenant(tenant, version=21, prev_version=20)])
    wait_for(lambda: r.hget(f"deployer:plan:{second}", "status") == "COMPLETED", what="second")
    assert task_json(tenant)["planId"] == second
    assert cli_json("task", "--tenant", tenant, "--plan", first, "--json")["planId"] == first
    missing = runner.invoke(app, ["task", "--tenant", tenant, "--plan", unique(), "--json"])
    assert missing.exit_code == 2 and json.loads(missing.output)["code"] == "TASK_NOT_FOUND"


def test_status_json_counts_and_iso_times(worker, r):
    plan_id = unique()
    submit(worker, r, plan_id, [bg_tenant(unique("t")), bg_tenant(unique("t"))])
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", what="done")
    status = cli_json("status", plan_id, "--json")
    assert status["counts"] == {"COMPLETED": 2} and status["total"] == 2
    assert ISO.match(status["createdAt"]) and ISO.match(status["updatedAt"])
    assert all(t["status"] == "COMPLETED" and t["failure"] is None for t in status["tasks"])


def stored_plan(r, n: int) -> tuple[Store, str, list[str]]:
    """A plan written straight through the store (no worker): every task PENDING."""
    settings = get_settings()
    store = Store(client_for(settings.state_url), settings)
    tenants = [f"{unique('pg')}-{i:02d}" for i in range(n)]
    plan_id, rows = task_rows(plan(unique(), [bg_tenant(t) for t in tenants]), settings)
    assert store.create_plan(plan_id, rows, 10, unique("run") + "-")
    return store, plan_id, tenants


def test_a_tasks_written_hash_is_read_on_the_target_redis_when_that_is_another_server(r):
    """DEPLOYER_TARGET_REDIS_URL names another server: a task's `hash` is the config there,
    where the runs write it and the services read it (it was read on the state Redis)."""
    from deployer.embedded import EmbeddedRedis

    with EmbeddedRedis() as other:
        settings = get_settings().model_copy(update={"target_redis_url": other.url})
        store = Store(client_for(settings.state_url), settings)
        tenant = unique("tt")
        plan_id, rows = task_rows(plan(unique(), [bg_tenant(tenant)]), settings)
        assert store.create_plan(plan_id, rows, 10, unique("run") + "-")
        target = client_for(other.url)
        target.hset(PREFIX + tenant, "metadata", '{"version":20}')
        r.hset(PREFIX + tenant, "metadata", '{"version":1}')  # not the target: never shown
        try:
            view = views.plan_task_view(store, plan_id, tenant)
            assert view is not None and view["hash"] == {"metadata": '{"version":20}'}
        finally:
            r.delete(PREFIX + tenant)
            target.close()


def test_task_pages_follow_the_cursor_to_the_end_in_submission_order(r):
    store, plan_id, tenants = stored_plan(r, 12)
    seen, cursor, pages = [], None, 0
    while True:
        page = views.task_page(store, plan_id, limit=5, cursor=cursor)
        seen += [t["tenantId"] for t in page["items"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == tenants and pages == 3 and page["total"] == 12


def test_a_filtered_page_scans_a_bounded_slice_and_says_where_to_continue(r):
    store, plan_id, tenants = stored_plan(r, 12)
    for i in (6, 11):  # two tasks in another status, far apart
        r.hset(f"deployer:task:{store.plan_task_ids(plan_id, i, i)[0]}", "status", "FAILED")
    found, cursor, requests = [], None, 0
    while True:
        page = views.task_page(store, plan_id, status="FAILED", cursor=cursor, scan_limit=4)
        assert page["scanned"] <= 4
        found += [t["tenantId"] for t in page["items"]]
        requests += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert found == [tenants[6], tenants[11]] and requests == 3
    one = views.task_page(store, plan_id, status="FAILED", limit=1)
    assert [t["tenantId"] for t in one["items"]] == [tenants[6]] and one["nextCursor"] == "7"
    hit = views.task_page(store, plan_id, search=tenants[3][-8:].upper())
    assert [t["tenantId"] for t in hit["items"]] == [tenants[3]]


def test_a_corrupt_task_hash_is_shown_not_a_crash(r):
    """A task whose hash holds values no writer produces (hand-edited, a bug elsewhere):
    every read model answers, an unreadable value shown as absent."""
    store, plan_id, tenants = stored_plan(r, 2)
    task_id = store.plan_task_ids(plan_id, 0, 0)[0]
    r.hset(
        f"deployer:task:{task_id}",
        mapping={"status": "SIDEWAYS", "stageIndex": "one", "updatedAt": "soon",
                 "run": "not json", "cursor": "garbage", "checkpoint": ""},
    )  # fmt: skip
    view = views.task_view(store, task_id)
    assert view is not None and "status" not in view and "stageIndex" not in view
    assert view["stages"] == [{"index": 0, "name": None, "state": "PENDING"}]
    row = views.task_page(store, plan_id, limit=5)["items"][0]
    assert row["status"] is None and row["stageIndex"] is None and row["updatedAt"] is None
    assert views.plan_view(store, plan_id)["tasks"][0]["tenantId"] == tenants[0]
    assert [t["planId"] for t in views.tenant_tasks(store, tenants[0])["items"]] == [plan_id]
