"""Flower, fed by a real `celery worker`, tells the truth about stages that poll.

- A stage whose HealthCheck gives up after polling is listed under `state=FAILURE`, whether
  its polls were re-sent with a countdown or parked in Redis (acks expected). Before: every
  poll attempt of the stage's uuid ended `task-succeeded`, and Celery's event state never
  lets a later FAILURE replace a SUCCESS, so Flower showed it SUCCESS.
- No fence token shows in any task Flower knows: args, kwargs, result, exception, traceback.
  Before: the result of every stage that handed its context on showed its token.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from celery import Celery

from deployer.fleet import Behaviour
from deployer.models import task_id_for
from tests.helpers import FLOWER_AUTH as AUTH
from tests.helpers import bg_tenant, plan, serve_flower, unique, wait_for, worker_env

pytestmark = pytest.mark.e2e
TWO_STAGES = ["blue-green-gateway", "ob-service"]


@pytest.fixture()
def client(redis_url: str) -> Celery:
    """A bare client, as another service has: no project code."""
    app = Celery("flower-truth", broker=redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", task_ignore_result=True)
    return app


def flower_tasks(base: str, **params: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = httpx.get(
        base + "/api/tasks", params=params, auth=AUTH, timeout=5
    ).json()
    return found


@pytest.mark.parametrize("acks", [False, True], ids=["countdown", "parked"])
def test_a_stage_failing_after_polls_is_a_failure_in_flower_and_no_token_shows(
    acks, spawn_worker, client, r, start_flower, session_fleet
):
    env = worker_env(DEPLOYER_FLEET_ACKS="true" if acks else "false")
    worker = spawn_worker("truth", concurrency=2, env=env)
    base = serve_flower(start_flower, {"FLOWER_BASIC_AUTH": ":".join(AUTH)})

    def flower_sees_events() -> bool:  # its event receiver connects after the HTTP server
        client.send_task("deployer.submit_plan", [{"planId": "canary"}], queue="deployer.control")
        return bool(flower_tasks(base))

    wait_for(flower_sees_events, timeout=30, interval=0.3, what="flower receiving events")
    bad, good, plan_id = unique("bad"), unique("good"), unique()
    session_fleet.behave(bad, Behaviour(never=True))  # its HealthCheck never converges
    tenants = [bg_tenant(bad), bg_tenant(good, serviceNames=TWO_STAGES)]
    client.send_task("deployer.submit_plan", [plan(plan_id, tenants)], queue="deployer.control")

    def waiting() -> list[dict[str, Any]]:
        found = flower_tasks(base, state="WAITING")
        return [t for t in found.values() if bad in (t.get("name") or "")]

    (polling,) = wait_for(waiting, interval=0.1, what="the polling stage shown WAITING")
    assert "instances at v20" in polling["result"]  # why it waits, in words
    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "FAILED",
        timeout=90,
        what="plan FAILED",
    )
    bad_task = r.hgetall(f"deployer:task:{task_id_for(plan_id, bad)}")
    assert bad_task["status"] == "FAILED"
    polls = re.search(r"did not report version 20 .* after (\d+) attempts", bad_task["lastError"])
    assert polls and int(polls[1]) > 1  # it failed after polling, not at once

    def failures() -> list[dict[str, Any]]:
        found = flower_tasks(base, state="FAILURE")
        return [t for t in found.values() if bad in (t.get("name") or "")]

    (shown,) = wait_for(failures, what="the polled stage listed under FAILURE")
    assert shown["name"] == f"stage blue-green-gateway · {bad}"
    assert shown["exception"].startswith("StageFailed('stage failed: task FAILED")
    assert bad_task["lastError"][:40] in shown["exception"]
    assert shown["result"] is None  # not the text of its last poll
    assert not shown["traceback"]  # an expected failure: its reason is the exception
    # It did poll, through the path this case is about.
    log = worker.log.read_text()
    assert ("stage parked, polled again" in log) is acks
    assert ("stage re-sent, again in" in log) is not acks

    # The healthy tenant's stages: SUCCESS, the first one's handed-on context shown masked.
    def good_stages() -> list[dict[str, Any]]:
        found = [t for t in flower_tasks(base).values() if good in (t.get("name") or "")]
        return found if len(found) == 2 and all(t["state"] == "SUCCESS" for t in found) else []

    stages = {t["name"]: t for t in wait_for(good_stages, what="the healthy stages")}
    handed_on = stages[f"stage blue-green-gateway · {good}"]["result"]
    assert "'token': '***'" in handed_on and f"'tenantId': '{good}'" in handed_on
    assert stages[f"stage ob-service · {good}"]["result"] == "'last stage done: task finished'"

    everything = httpx.get(base + "/api/tasks", auth=AUTH, timeout=5).text
    for tenant in (bad, good):
        task = r.hgetall(f"deployer:task:{task_id_for(plan_id, tenant)}")
        assert task["token"] not in everything
        assert task["runId"] + "." not in everything  # no token of any generation of the run
