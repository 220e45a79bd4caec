"""What Flower shows for a message: labels to filter on, a summary, never a secret."""

from __future__ import annotations

import ast

from tasks.reprs import RedactingAMQP, reprs


def _ctx(**extra):
    return {
        "planId": "p1",
        "taskId": "task-p1_t1",
        "tenantId": "t1",
        "runKind": "FORWARD",
        "token": "lease-token",
        "stageCount": 3,
        "stageIndex": 1,
        "additionalData": {"planVersion": 20},
        **extra,
    }


def test_a_stage_task_shows_plan_tenant_and_stage_as_filterable_kwargs():
    spec = {"name": "blue-green-gateway", "steps": [{"params": {"password": "hunter2"}}]}
    argsrepr, kwargsrepr = reprs("deployer.run_stage", [_ctx(), spec], {})
    tags = ast.literal_eval(kwargsrepr)  # Flower parses it the same way for kwargs:k=v
    assert tags == {
        "planId": "p1",
        "tenantId": "t1",
        "stage": "blue-green-gateway",
        "stageIndex": 1,
        "stageCount": 3,
        "runKind": "FORWARD",
        "planVersion": 20,
    }
    assert "tenantId=t1" in argsrepr and "stage=blue-green-gateway" in argsrepr
    assert "hunter2" not in argsrepr + kwargsrepr
    assert "lease-token" not in argsrepr + kwargsrepr


def test_a_plan_submission_is_summarised_not_dumped():
    plan = {"planId": "p9", "tenants": [{"tenantId": f"t{i}", "password": "x"} for i in range(500)]}
    argsrepr, _ = reprs("deployer.submit_plan", [plan], {})
    assert ast.literal_eval(argsrepr) == ({"planId": "p9", "tenants": 500},)


def test_a_control_verb_shows_its_target_and_masks_secrets():
    argsrepr, kwargsrepr = reprs(
        "deployer.pause", [{"planId": "p1"}], {"by": "ops", "reason": "token=abc", "token": "t"}
    )
    assert ast.literal_eval(argsrepr) == ({"planId": "p1"},)
    assert ast.literal_eval(kwargsrepr) == {
        "planId": "p1",
        "by": "ops",
        "reason": "token=abc",
        "token": "***",
    }


def test_the_project_app_builds_messages_with_redacted_reprs():
    from tasks import app

    assert isinstance(app.amqp, RedactingAMQP)
    msg = app.amqp.as_task_v2("id-1", "deployer.cancel", [{"tenantId": "t", "secret": "s"}], {})
    assert "'s'" not in msg.headers["argsrepr"]
    assert msg.sent_event is None or "'s'" not in msg.sent_event["args"]
