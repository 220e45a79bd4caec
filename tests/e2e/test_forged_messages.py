"""A real `celery worker` process against hand-made and failing stage messages.

- A stage message carrying a live task token but another tenant's or plan's id is refused
  (FORGED, a WARNING) before anything is touched: before, it wrote the other tenant's hash
  and corrupted a finished plan's counters.
- A stage that ends its task FAILED is a FAILURE in Celery's events (what Flower shows),
  acknowledged, not redelivered, its chain stopped: before, a SUCCESS with a text result.
- The fence token never reaches the worker log (before: every stage-success line).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from deployer.fleet import Behaviour
from deployer.models import task_id_for

# Flower's fixture and helpers, shared with tests/integration/test_flower.py; a fixture is
# imported by name and requested as a parameter (hence F401/F811 for this module).
# ruff: noqa: F401, F811
from tests.e2e.conftest import Broker
from tests.helpers import FLOWER_AUTH as AUTH
from tests.helpers import bg_tenant, plan, serve_flower, unique, wait_for

pytestmark = pytest.mark.e2e
PREFIX = "icc_ai_ops_srv:tenant_config:"
TWO_STAGES = ["blue-green-gateway", "ob-service"]


@pytest.fixture()
def client(broker: Broker) -> Celery:
    """A bare client on each broker: what a hostile or buggy sender has, no project code."""
    broker.clear()
    app = Celery("forger", broker=broker.url, set_as_current=False)
    app.conf.update(task_serializer="json", task_ignore_result=True)
    return app


def submit(client: Celery, r: Any, plan_id: str, tenants: list[dict[str, Any]]) -> None:
    client.send_task("deployer.submit_plan", [plan(plan_id, tenants)], queue="deployer.control")
    wait_for(lambda: r.exists(f"deployer:plan:{plan_id}"), what=f"plan {plan_id} stored")


def snapshot(r: Any, plan_id: str, tenant: str) -> dict[str, Any]:
    task = r.hgetall(f"deployer:task:{task_id_for(plan_id, tenant)}")
    return {
        "hash": r.hgetall(PREFIX + tenant),
        "plan": r.hgetall(f"deployer:plan:{plan_id}"),
        "task": {k: v for k, v in task.items() if k != "updatedAt"},
    }


def test_forged_stage_messages_touch_no_other_tenant_or_plan(
    spawn_worker, broker, client, r, session_fleet
):
    worker = spawn_worker("forged", concurrency=2, env=broker.worker_env())
    victim, victim_plan = unique("victim"), unique()
    submit(client, r, victim_plan, [bg_tenant(victim, version=20)])
    wait_for(lambda: r.hget(f"deployer:plan:{victim_plan}", "status") == "COMPLETED", timeout=30)
    before = snapshot(r, victim_plan, victim)

    # The forger's own tenant waits in its HealthCheck: its task token is live.
    own, own_plan = unique("own"), unique()
    session_fleet.behave(own, Behaviour(never=True))
    submit(client, r, own_plan, [bg_tenant(own, version=99)])
    own_key = f"deployer:task:{task_id_for(own_plan, own)}"
    wait_for(lambda: "instances" in (r.hget(own_key, "progress") or ""), what="own task waiting")
    ctx = json.loads(r.hget(own_key, "ctx"))
    spec = json.loads(r.hget(own_key, "run"))["stages"][0]
    ctx["token"] = r.hget(own_key, "token")  # the live token
    ctx["stepIndex"], ctx["attempt"] = 0, 0  # from the write
    session_fleet.behave(own, Behaviour())  # from now on its stages would complete

    forgeries = [
        {**ctx, "tenantId": victim},  # another tenant's hash
        {**ctx, "planId": victim_plan},  # a finished plan's counters
        {**ctx, "tenantId": victim, "planId": victim_plan},
    ]
    for forged in forgeries:
        client.send_task("deployer.run_stage", [forged, spec], queue="deployer.stages")
    wait_for(
        lambda: worker.log.read_text().count("message names plan") >= len(forgeries),
        what="every forgery refused",
    )
    log = worker.log.read_text()
    assert log.count("WARNING") >= len(forgeries)
    assert snapshot(r, victim_plan, victim) == before  # hash, counters, task: untouched
    assert r.hget(PREFIX + victim, "metadata") == '{"version":20}'
    assert not r.exists(f"deployer:lease:{victim}")
    # The forger's own task was not touched either and completes on its own.
    wait_for(lambda: r.hget(f"deployer:plan:{own_plan}", "status") == "COMPLETED", timeout=30)
    counters = r.hgetall(f"deployer:plan:{own_plan}")
    assert (counters["c:COMPLETED"], counters["c:RUNNING"], counters["inflight"]) == ("1", "0", "0")
    assert snapshot(r, victim_plan, victim) == before


class Events:
    """Celery's own event receiver (what Flower runs), capturing in a thread."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.seen: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.receiver: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection() as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": self.seen.append})
            self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def by_uuid(self, uuid: str) -> list[dict[str, Any]]:
        return [e for e in list(self.seen) if e.get("uuid") == uuid]

    def __enter__(self) -> Events:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(10)


@pytest.fixture()
def events(client: Celery) -> Iterator[Events]:
    with Events(client) as ev:
        yield ev


def test_a_stage_that_fails_its_task_is_a_celery_failure_acked_and_its_chain_stopped(
    spawn_worker, broker, client, r, session_fleet, events
):
    worker = spawn_worker("failing", concurrency=2, env=broker.worker_env())
    wait_for(lambda: any(e["type"] == "worker-heartbeat" for e in events.seen), what="events")
    tenant, plan_id = unique("fails"), unique()
    session_fleet.behave(tenant, Behaviour(never=True))  # the first stage's HealthCheck gives up
    submit(client, r, plan_id, [bg_tenant(tenant, serviceNames=TWO_STAGES)])
    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "FAILED",
        timeout=60,
        what="plan FAILED",
    )
    # A HealthCheck poll re-sends its stage under the same task id: one uuid per stage.
    uuids = {
        e["uuid"]
        for e in events.seen
        if e["type"] == "task-received" and tenant in (e.get("name") or "")
    }
    assert len(uuids) == 1  # the first stage only: the chain stopped there

    def failed_events() -> list[dict[str, Any]]:
        return [e for u in uuids for e in events.by_uuid(u) if e["type"] == "task-failed"]

    failed = wait_for(failed_events, what="the task-failed event")
    assert len(failed) == 1
    exception = failed[0]["exception"]
    assert "StageFailed" in exception and "stage failed: task FAILED" in exception
    task = r.hgetall(f"deployer:task:{task_id_for(plan_id, tenant)}")
    assert task["status"] == "FAILED" and task["failedStage"] == "blue-green-gateway"
    assert task["lastError"][:40] in exception  # the reason, as the task stores it

    uuid = failed[0]["uuid"]
    name = next(e["name"] for e in events.by_uuid(uuid) if e["type"] == "task-received")
    assert name == f"stage blue-green-gateway · {tenant}"
    # Acknowledged: nothing of it is left unacked or queued, and it never came back.
    wait_for(broker.drained, what="nothing unacked or queued")
    # Its last event is the failure (Flower's state: FAILURE); Celery never retried it.
    assert events.by_uuid(uuid)[-1]["type"] == "task-failed"
    assert not [e for e in events.by_uuid(uuid) if e["type"] == "task-retried"]
    # The chain stopped: ob-service never started.
    started = [
        f["stage"]
        for _, f in r.xrange("deployer:events")
        if f.get("tenantId") == tenant and f["type"] == "STAGE_STARTED"
    ]
    assert started == ["blue-green-gateway"]
    log = worker.log.read_text()
    assert "raised expected: StageFailed" in log and "Traceback" not in log


def test_no_fence_token_reaches_the_worker_log(spawn_worker, broker, client, r):
    worker = spawn_worker("tokens", concurrency=2, env=broker.worker_env())
    plan_id = unique()
    tenants = [unique("tok") for _ in range(3)]
    submit(client, r, plan_id, [bg_tenant(t, serviceNames=TWO_STAGES) for t in tenants])
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", timeout=60)
    log = worker.log.read_text()
    assert "succeeded in" in log and "'token': '***'" in log  # the success lines, redacted
    for t in tenants:
        task = r.hgetall(f"deployer:task:{task_id_for(plan_id, t)}")
        assert task["token"] and task["token"] not in log
        assert task["runId"] + "." not in log  # no token of any generation of the run


def test_flower_finds_a_failed_stage_with_state_failure(
    spawn_worker,
    broker,
    client,
    r,
    start_flower,
    session_fleet,
):
    """Before: `/api/tasks?state=FAILURE` found nothing; the failed stage was a SUCCESS."""
    import httpx

    spawn_worker("flowerfail", concurrency=2, env=broker.worker_env())
    flower_env = {"FLOWER_BASIC_AUTH": ":".join(AUTH), "DEPLOYER_BROKER_URL": broker.url}
    base = serve_flower(start_flower, flower_env)

    def flower_sees_events() -> bool:  # its event receiver connects after the HTTP server
        client.send_task("deployer.submit_plan", [{"planId": "canary"}], queue="deployer.control")
        return bool(httpx.get(base + "/api/tasks", auth=AUTH, timeout=5).json())

    wait_for(flower_sees_events, timeout=30, interval=0.3, what="flower receiving events")
    # A business error at the portal stage: the task fails at once, no polling.
    tenant, plan_id = unique("ffail"), unique()
    session_fleet.behave(tenant, Behaviour(reject=True))
    portal = {"tenantId": tenant, "deployUnitName": "green", "planVersion": 20,
              "trunkGroup": "tg-1", "calledNumberRules": "4001",
              "serviceNames": ["portal"]}  # fmt: skip
    submit(client, r, plan_id, [portal])
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "FAILED", timeout=60)
    task = r.hgetall(f"deployer:task:{task_id_for(plan_id, tenant)}")

    def failures() -> list[dict[str, Any]]:
        found = httpx.get(base + "/api/tasks", params={"state": "FAILURE"}, auth=AUTH, timeout=5)
        return [t for t in found.json().values() if tenant in (t.get("name") or "")]

    (shown,) = wait_for(failures, what="the failed stage listed under FAILURE")
    assert shown["state"] == "FAILURE" and shown["name"] == f"stage portal · {tenant}"
    assert "stage failed: task FAILED" in shown["exception"]
    assert task["lastError"][:40] in shown["exception"]
