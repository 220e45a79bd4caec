"""DeployerClient: every public verb as the exact message on the wire, and its reads."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis

from deployer.client import DeployerClient, PlanStatus, Rejection
from deployer.settings import Settings
from tests.helpers import bg_tenant, plan, unique, wait_for


@pytest.fixture()
def offline(redis_url: str) -> tuple[DeployerClient, redis.Redis]:
    """A client on a database no worker consumes: its messages stay to be read."""
    url = redis_url.rsplit("/", 1)[0] + "/7"
    raw = redis.Redis.from_url(url, decode_responses=True)
    raw.flushdb()
    return DeployerClient(Settings(broker_url=url, redis_url=url)), raw


def sent(raw: redis.Redis) -> list[tuple[str, list[Any], dict[str, Any], dict[str, Any]]]:
    """(task, args, kwargs, headers) of every message waiting in deployer.control, oldest first."""
    out = []
    for item in reversed(raw.lrange("deployer.control", 0, -1)):
        envelope = json.loads(item)
        args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        assert envelope["content-type"] == "application/json"
        out.append((envelope["headers"]["task"], args, kwargs, envelope["headers"]))
    return out


def test_every_public_verb_is_sent_by_name_with_the_documented_arguments(offline):
    client, raw = offline
    submitted = {"planId": 42, "tenants": [{"tenantId": "t", "password": "pw"}]}
    client.submit(submitted)
    client.pause(plan="p1", by="ops", reason="window closed")
    client.resume(tenant="t1")
    client.cancel(plan="p1", reason="abandoned")
    client.retry(tenant="t1", from_checkpoint=True, by="ops")
    client.rollback(plan="p1", by="ops")
    messages = sent(raw)
    assert [(m[0], m[1], m[2]) for m in messages] == [
        ("deployer.submit_plan", [submitted], {}),
        ("deployer.pause", [{"planId": "p1"}], {"by": "ops", "reason": "window closed"}),
        ("deployer.resume", [{"tenantId": "t1"}], {}),
        ("deployer.cancel", [{"planId": "p1"}], {"reason": "abandoned"}),
        ("deployer.retry", [{"tenantId": "t1"}], {"from_checkpoint": True, "by": "ops"}),
        ("deployer.rollback", [{"planId": "p1"}], {"by": "ops"}),
    ]  # fmt: skip
    assert "pw" not in messages[0][3]["argsrepr"]  # what monitoring shows is redacted


def test_the_wave_verbs_are_sent_with_their_wave_and_options(offline):
    client, raw = offline
    client.approve("p1", 2, by="qa", reason="canary fine")
    client.promote("p1", all_waves=True, approve=True)
    client.promote("p1", 1)
    client.budget("p1", "5%", reset=True, by="ops")
    client.rollback(plan="p1", force=True)
    client.resume(plan="p1", budget=3)
    assert [(m[0], m[1], m[2]) for m in sent(raw)] == [
        ("deployer.approve", [{"planId": "p1", "wave": 2}], {"by": "qa", "reason": "canary fine"}),
        ("deployer.promote", [{"planId": "p1"}], {"all": True, "approve": True}),
        ("deployer.promote", [{"planId": "p1", "wave": 1}], {}),
        ("deployer.budget", [{"planId": "p1"}], {"max": "5%", "reset": True, "by": "ops"}),
        ("deployer.rollback", [{"planId": "p1"}], {"force": True}),
        ("deployer.resume", [{"planId": "p1"}], {"budget": 3}),
    ]  # fmt: skip


def test_a_target_is_a_plan_a_tenant_or_both_for_one_task(offline):
    client, raw = offline
    client.pause(plan="p", tenant="t")
    assert sent(raw)[0][:2] == ("deployer.pause", [{"planId": "p", "tenantId": "t"}])
    with pytest.raises(ValueError):
        client.cancel()


def test_submit_then_wait_reads_the_public_plan_hash(worker):
    client = DeployerClient()
    plan_id = client.submit(plan(unique(), [bg_tenant(f"t-{unique()}") for _ in range(2)]))
    accepted = client.wait_accepted(plan_id, timeout=20)
    assert isinstance(accepted, PlanStatus) and accepted.total == 2
    assert client.wait(plan_id, timeout=30) == "COMPLETED"
    final = client.status(plan_id)
    assert final is not None and final.terminal and final.counts == {"COMPLETED": 2}


def test_a_rejected_plan_comes_back_with_its_field_errors(worker):
    client = DeployerClient()
    plan_id = unique()
    client.submit({"planId": plan_id, "tenants": [{"planVersion": -1}]})
    rejected = wait_for(lambda: client.wait_accepted(plan_id, timeout=0), what="rejection")
    assert isinstance(rejected, Rejection)
    assert rejected.code == "PLAN_INVALID" and rejected.errors
    assert client.plan_status(plan_id) is None


def test_execute_answers_as_the_control_task_does_with_no_worker_needed():
    """The CLI's and the HTTP API's path: a refusal or a bad target is an answer, not an
    exception, and the task's result is the same dict."""
    from tasks.control import pause

    client = DeployerClient()
    tenant = unique("t")
    here = client.execute("pause", {"tenantId": tenant}, by="ops")
    assert here["ok"] is False and here["code"] == "TASK_NOT_FOUND"
    assert here == pause.run({"tenantId": tenant}, by="ops")  # the task's own code, in-process
    invalid = client.execute("pause", {"tenantId": "no spaces allowed"})
    assert invalid["ok"] is False and invalid["code"] == "TARGET_INVALID"
    assert client.execute("cancel", {})["code"] == "TARGET_INVALID"
